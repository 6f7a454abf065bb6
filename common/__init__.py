"""Small pieces shared by every stage (data_prep, pipeline): the pinned versions, the stack check, and the
Hydra command-line front end (friendly override errors)."""
