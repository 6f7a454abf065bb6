// The drum machine: 8 pads generated in the browser by the exported generator (onnxruntime-web, wasm).
// Opened as a file it loads the model and the wasm from inline/*.js (classic scripts, base64) and runs
// single-threaded; served with COOP/COEP (make web-serve) it fetches them and uses threads.
// window.wavegan is the page's handle for tests and the benchmark.
"use strict";
(() => {
  const META = window.WAVEGAN_META;
  const SR = Number(META.sample_rate), LEN = Number(META.slice_len), DIM = Number(META.latent_dim);
  const NCLS = Number(META.num_classes);
  const NAMES = NCLS ? (JSON.parse(META.label_names || "[]").length === NCLS ? JSON.parse(META.label_names)
    : Array.from({ length: NCLS }, (_, i) => String(i))) : [];
  const NPADS = 8, STEPS = 16;
  const FROM_FILE = location.protocol === "file:";
  const $ = (id) => document.getElementById(id);

  const show = (text) => { const el = $("message"); el.textContent = text || ""; el.hidden = !text; };
  window.addEventListener("error", (e) => show(`error: ${e.message}`));
  window.addEventListener("unhandledrejection", (e) => show(`error: ${e.reason && e.reason.message || e.reason}`));

  // ---- the model ---------------------------------------------------------------------------------------
  const loadScript = (src) => new Promise((resolve, reject) => {
    const s = document.createElement("script");
    s.src = src; s.onload = resolve; s.onerror = () => reject(new Error(`cannot load ${src}`));
    document.head.appendChild(s);
  });
  const bytes = (b64) => {
    const bin = atob(b64), out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  };

  async function createSession() {
    ort.env.wasm.proxy = false;
    let model;
    if (FROM_FILE) {  // no fetch from file://: the bytes come in classic scripts, the glue as a data: module
      await loadScript("inline/ort.js");
      await loadScript("inline/model.js");
      const inline = window.WAVEGAN_INLINE;
      ort.env.wasm.numThreads = 1;
      ort.env.wasm.wasmBinary = bytes(inline.ort.wasm);
      ort.env.wasm.wasmPaths = { mjs: `data:text/javascript;base64,${inline.ort.mjs}` };
      model = bytes(inline.model.onnx);
      delete window.WAVEGAN_INLINE;
    } else {
      ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
      const response = await fetch("generator.onnx");
      if (!response.ok) throw new Error(`generator.onnx: HTTP ${response.status}`);
      model = new Uint8Array(await response.arrayBuffer());
    }
    return ort.InferenceSession.create(model, { executionProviders: ["wasm"] });
  }

  let session = null, queue = Promise.resolve();
  // Latents (n x DIM, flat) and labels (n ids, conditional models) -> n Float32Arrays of channels x LEN.
  function generate(z, labels, n) {
    const job = queue.then(async () => {
      const feeds = { z: new ort.Tensor("float32", Float32Array.from(z), [n, DIM]) };
      if (NCLS) feeds.labels = new ort.Tensor("int64", BigInt64Array.from(labels, (v) => BigInt(v)), [n]);
      const out = (await session.run(feeds)).audio;
      const per = out.data.length / n;
      return Array.from({ length: n }, (_, i) => out.data.slice(i * per, (i + 1) * per));
    });
    queue = job.catch(() => {});
    return job;
  }

  // ---- audio -------------------------------------------------------------------------------------------
  let ctx = null, master = null, wet = null;
  function audio() {  // created on the first gesture (browsers keep a context made earlier suspended)
    if (!ctx) {
      ctx = new AudioContext();
      master = ctx.createGain(); master.connect(ctx.destination);
      const reverb = ctx.createConvolver(), seconds = 1.6;
      const ir = ctx.createBuffer(2, Math.round(ctx.sampleRate * seconds), ctx.sampleRate);
      for (let c = 0; c < 2; c++) {
        const d = ir.getChannelData(c);
        for (let i = 0; i < d.length; i++) d[i] = (Math.random() * 2 - 1) * Math.pow(1 - i / d.length, 3);
      }
      reverb.buffer = ir;
      wet = ctx.createGain(); wet.connect(reverb); reverb.connect(master);
      setMix();
    }
    if (ctx.state !== "running") ctx.resume();
    return ctx;
  }
  function setMix() {
    if (!master) return;
    master.gain.value = $("volume").value / 100;
    wet.gain.value = $("reverb").value / 100;
  }

  // ---- pads --------------------------------------------------------------------------------------------
  const pads = [];
  const drawZ = () => Float32Array.from({ length: DIM }, () => Math.random() * 2 - 1);

  function buildPads() {
    const root = $("pads");
    for (let i = 0; i < NPADS; i++) {
      const el = document.createElement("div");
      el.className = "pad"; el.id = `pad${i + 1}`;
      const labelPicker = NCLS ? `<select class="label" aria-label="label of pad ${i + 1}">${
        NAMES.map((n, k) => `<option value="${k}">${n.replace(/[<&"]/g, "")}</option>`).join("")}</select>` : "";
      el.innerHTML = `<h3><span>Pad ${i + 1} <span class="note">(key ${i + 1})</span></span>${labelPicker}</h3>
        <canvas width="448" height="72" aria-label="waveform of pad ${i + 1}; click to play"></canvas>
        <div class="row"><button type="button" class="play">Play</button><button type="button" class="change">Change</button>
        <button type="button" class="save">Save</button><button type="button" class="copy">copy z</button>
        <button type="button" class="paste">paste z</button></div>`;
      root.appendChild(el);
      const pad = { el, canvas: el.querySelector("canvas"), z: drawZ(), label: NCLS ? i % NCLS : null, buffer: null };
      if (NCLS) {
        const sel = el.querySelector("select.label");
        sel.value = String(pad.label);
        sel.addEventListener("change", () => { pad.label = Number(sel.value); refresh([i], performance.now()); });
      }
      pad.canvas.addEventListener("click", (e) => play(i, e.timeStamp));
      el.querySelector(".play").addEventListener("click", (e) => play(i, e.timeStamp));
      el.querySelector(".change").addEventListener("click", (e) => change(i, e.timeStamp));
      el.querySelector(".save").addEventListener("click", () => save(i));
      el.querySelector(".copy").addEventListener("click", () => copyZ(i));
      el.querySelector(".paste").addEventListener("click", (e) => pasteZ(i, $("zbox").value, e.timeStamp));
      pads.push(pad);
    }
  }

  function toBuffer(samples) {
    const channels = samples.length / LEN;
    const buffer = new AudioBuffer({ numberOfChannels: channels, length: LEN, sampleRate: SR });
    for (let c = 0; c < channels; c++) buffer.copyToChannel(samples.subarray(c * LEN, (c + 1) * LEN), c);
    return buffer;
  }

  function drawWave(pad) {
    const c = pad.canvas, g = c.getContext("2d"), data = pad.buffer.getChannelData(0);
    const style = getComputedStyle(document.documentElement);
    g.clearRect(0, 0, c.width, c.height);
    g.fillStyle = style.getPropertyValue("--a").trim() || "#1f6fd1";
    let peak = 1e-3;  // scaled to the clip's peak: a quiet clip still shows its shape
    for (let k = 0; k < data.length; k++) peak = Math.max(peak, Math.abs(data[k]));
    const per = data.length / c.width, mid = c.height / 2 / peak;
    for (let x = 0; x < c.width; x++) {
      let lo = 1, hi = -1;
      for (let k = Math.floor(x * per); k < Math.floor((x + 1) * per); k++) { lo = Math.min(lo, data[k]); hi = Math.max(hi, data[k]); }
      g.fillRect(x, c.height / 2 - hi * mid, 1, Math.max(1, (hi - lo) * mid));
    }
  }

  // Regenerate pads ``ids`` from their z and label in one batch; ``since``: the event time, for the timings.
  async function refresh(ids, since, thenPlay = false) {
    const clips = await generate(ids.flatMap((i) => Array.from(pads[i].z)), ids.map((i) => pads[i].label), ids.length);
    ids.forEach((i, k) => { pads[i].buffer = toBuffer(clips[k]); drawWave(pads[i]); });
    if (thenPlay) play(ids[0], since);
  }

  const timings = [];
  function play(i, since, when = 0) {
    const pad = pads[i];
    if (!pad.buffer) return;
    const ac = audio(), src = ac.createBufferSource();
    src.buffer = pad.buffer;
    src.connect(master); src.connect(wet);
    src.start(when);
    if (since !== undefined) timings.push({ pad: i, ms: performance.now() - since });
    pad.el.classList.add("playing");
    src.onended = () => pad.el.classList.remove("playing");
  }

  function change(i, since) {
    pads[i].z = drawZ();
    show("");
    return refresh([i], since, true);
  }

  // ---- save, copy, paste -------------------------------------------------------------------------------
  function wav(buffer) {
    const ch = buffer.numberOfChannels, n = buffer.length, out = new DataView(new ArrayBuffer(44 + n * ch * 2));
    const text = (at, s) => [...s].forEach((c, k) => out.setUint8(at + k, c.charCodeAt(0)));
    text(0, "RIFF"); out.setUint32(4, 36 + n * ch * 2, true); text(8, "WAVE"); text(12, "fmt ");
    out.setUint32(16, 16, true); out.setUint16(20, 1, true); out.setUint16(22, ch, true);
    out.setUint32(24, buffer.sampleRate, true); out.setUint32(28, buffer.sampleRate * ch * 2, true);
    out.setUint16(32, ch * 2, true); out.setUint16(34, 16, true); text(36, "data"); out.setUint32(40, n * ch * 2, true);
    const data = Array.from({ length: ch }, (_, c) => buffer.getChannelData(c));
    for (let k = 0; k < n; k++) {
      for (let c = 0; c < ch; c++) {
        const v = Math.max(-1, Math.min(1, data[c][k]));
        out.setInt16(44 + (k * ch + c) * 2, Math.round(v * 32767), true);
      }
    }
    return new Uint8Array(out.buffer);
  }

  function save(i) {
    const pad = pads[i];
    if (!pad.buffer) return;
    const a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([wav(pad.buffer)], { type: "audio/wav" }));
    a.download = `pad${i + 1}${NCLS ? "-" + NAMES[pad.label] : ""}.wav`;
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }

  function copyZ(i) {
    const pad = pads[i];
    const text = JSON.stringify(NCLS ? { label: NAMES[pad.label], z: Array.from(pad.z) } : { z: Array.from(pad.z) });
    $("zbox").value = text;
    if (navigator.clipboard && navigator.clipboard.writeText) navigator.clipboard.writeText(text).catch(() => {});
    show("");
  }

  // JSON {"z": [DIM numbers], "label": name or id} (or a bare array) -> {z, label}; throws a readable Error.
  function parseLatent(text) {
    let value;
    try { value = JSON.parse(text); } catch (_) { throw new Error("paste z: not JSON; copy z from a pad gives the format"); }
    const z = Array.isArray(value) ? value : value && value.z;
    if (!Array.isArray(z) || z.length !== DIM || !z.every((v) => typeof v === "number" && Number.isFinite(v))) {
      throw new Error(`paste z: this model takes ${DIM} numbers, got ${Array.isArray(z) ? z.length + " values" : "no z"}`);
    }
    let label = null;
    const given = Array.isArray(value) ? undefined : value.label;
    if (NCLS) {
      if (given === undefined) label = undefined;
      else if (NAMES.includes(String(given))) label = NAMES.indexOf(String(given));
      else if (Number.isInteger(given) && given >= 0 && given < NCLS) label = given;
      else throw new Error(`paste z: label ${JSON.stringify(given)} is not in this model (${NAMES.join(", ")})`);
    } else if (given !== undefined) {
      throw new Error("paste z: this model is unconditional; remove the label");
    }
    return { z: Float32Array.from(z), label };
  }

  async function pasteZ(i, text, since) {
    try {
      const { z, label } = parseLatent(text);
      pads[i].z = z;
      if (label !== null && label !== undefined) {
        pads[i].label = label;
        pads[i].el.querySelector("select.label").value = String(label);
      }
      show("");
      await refresh([i], since, true);
    } catch (err) {
      show(err.message);
    }
  }

  // ---- sequencer ---------------------------------------------------------------------------------------
  const pattern = Array.from({ length: NPADS }, () => new Array(STEPS).fill(false));
  [[0, [0, 8]], [1, [4, 12]], [2, [2, 6, 10, 14]], [3, [11]]].forEach(([p, steps]) => steps.forEach((s) => { pattern[p][s] = true; }));
  let playing = false, timer = null, nextStep = 0, nextTime = 0;

  function buildGrid() {
    const grid = $("grid");
    for (let p = 0; p < NPADS; p++) {
      const row = grid.insertRow();
      row.innerHTML = `<th>${p + 1}</th>`;
      for (let s = 0; s < STEPS; s++) {
        const cell = row.insertCell();
        cell.className = `s${s}` + (s % 4 === 0 ? " beat" : "");
        const box = document.createElement("input");
        box.type = "checkbox"; box.checked = pattern[p][s]; box.setAttribute("aria-label", `pad ${p + 1} step ${s + 1}`);
        box.addEventListener("change", () => { pattern[p][s] = box.checked; });
        cell.appendChild(box);
      }
    }
  }

  function schedule() {
    const stepTime = 60 / Number($("tempo").value) / 4, swing = Number($("swing").value) / 100;
    while (nextTime < ctx.currentTime + 0.1) {
      const at = nextTime + (nextStep % 2 ? swing * stepTime : 0), step = nextStep;
      for (let p = 0; p < NPADS; p++) if (pattern[p][step]) play(p, undefined, at);
      setTimeout(() => {
        document.querySelectorAll("#grid td.now").forEach((td) => td.classList.remove("now"));
        if (playing) document.querySelectorAll(`#grid td.s${step}`).forEach((td) => td.classList.add("now"));
      }, Math.max(0, (at - ctx.currentTime) * 1000));
      nextTime += stepTime; nextStep = (nextStep + 1) % STEPS;
    }
  }

  function toggle() {
    playing = !playing;
    $("play").textContent = playing ? "Stop" : "Play";
    if (playing) {
      audio(); nextStep = 0; nextTime = ctx.currentTime + 0.05;
      timer = setInterval(schedule, 25); schedule();
    } else {
      clearInterval(timer);
      document.querySelectorAll("#grid td.now").forEach((td) => td.classList.remove("now"));
    }
  }

  // ---- wiring ------------------------------------------------------------------------------------------
  function header() {
    const who = META.model_name ? `${META.model_name} v${META.model_version}` : META.source;
    const run = META.run_id ? `run ${META.run_name || ""} (${META.run_id})` : "no MLflow run";
    $("identity").textContent = `${who} · ${run} · step ${META.step || "?"} · ${META.generator_weights || "?"} weights · ` +
      `eval IS ${META.eval_is || "-"} · ${SR} Hz, ${LEN} samples, z of ${DIM}` + (NCLS ? `, ${NCLS} labels` : "");
  }

  function wire() {
    [["tempo", "tempo-out"], ["swing", "swing-out"]].forEach(([id, out]) => $(id).addEventListener("input", () => { $(out).value = $(id).value; }));
    $("volume").addEventListener("input", setMix);
    $("reverb").addEventListener("input", setMix);
    $("play").addEventListener("click", toggle);
    $("clear").addEventListener("click", () => {
      pattern.forEach((row) => row.fill(false));
      document.querySelectorAll("#grid input").forEach((b) => { b.checked = false; });
    });
    document.addEventListener("keydown", (e) => {
      if (e.target.closest && e.target.closest("textarea, input, select")) return;
      const m = /^Digit([1-8])$/.exec(e.code);
      if (!m || e.repeat) return;
      e.preventDefault();
      const i = Number(m[1]) - 1;
      if (e.shiftKey) change(i, e.timeStamp); else play(i, e.timeStamp);
    });
  }

  const ready = (async () => {
    header(); buildPads(); buildGrid(); wire();
    session = await createSession();
    const threads = ort.env.wasm.numThreads;
    $("runtime").textContent = `onnxruntime-web ${ort.env.versions.web} (wasm, ${threads} thread${threads > 1 ? "s" : ""}` +
      `${FROM_FILE ? ", opened as a file" : self.crossOriginIsolated ? ", cross-origin isolated" : ""})`;
    await refresh(pads.map((_, i) => i));
    document.body.dataset.ready = "1";
  })();
  ready.catch((err) => show(`could not start: ${err.message}`));

  window.wavegan = {
    ready, generate, timings, parseLatent, wav, pads,
    meta: META, labels: NAMES, threads: () => ort.env.wasm.numThreads,
  };
})();
