"""The study's infrastructure: where trials are stored and how workers run them.

`storage` (SQLite, PostgreSQL, journal files), `retry` (storage calls ride out a lost
connection), `journal` (the journal-file heartbeat), `ownership` (a hung worker notices its
trial was taken), `packing` (how many trials share a device), `plan` (the validated flags a
study stores) and `workers` (the loop every search process runs, dead trials). The trial's
own logic (objective, recorder, triage, pruner, sampler, ...) sits one level up, in
`autotune.search`; this package imports it, never the other way round, except `ownership`,
a leaf the trial's recorder asks whether its trial is still its own.

Nothing is re-exported here, so that importing one leaf (`ownership`) loads only that leaf.
"""
