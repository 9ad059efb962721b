"""Results: the one result document of a run (document.py: constructor, schema, atomic
write) and a results directory of many runs (store.py: index, resume, merge)."""
