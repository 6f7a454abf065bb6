"""Small pieces shared by every stage (data_prep, pipeline): the pinned versions and the stack check."""
