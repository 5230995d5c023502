"""The pure core: keys, claims, hard and soft bindings, envelopes, the verdict.

No I/O, no store, no network: everything here is a function of its arguments.
"""
