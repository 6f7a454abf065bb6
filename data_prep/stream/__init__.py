"""Reading a split back for training: one global order per epoch, each rank and loader worker its share.

``index``: where every clip of a split lies (shard, byte range, label); ``order``: the epoch's seeded global
order cut into global batches; ``reads``: byte-range reads of a stream's clips. ``data_prep.loader`` puts them
together behind ``build_loader``.
"""
