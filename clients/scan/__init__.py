"""Batch scanning of folders and archives (``prov scan``).

sources: what is read (folders, zip/tar streams, list files; hostile entries refused);
hashing: SHA-256 and perceptual hashes of one item; worker: the one code path that turns
a batch of items into report rows (hash, batch lookup, sidecar check, detector); engines:
where it runs (in-process, a local process pool, Ray); resume: the JSON Lines journal;
report: CSV and HTML; pipeline: the driver; progress and cli: what a person sees.
"""
