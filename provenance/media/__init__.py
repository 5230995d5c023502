"""Media inspection at the edge: decoding images and video within budgets,
computing bindings from files, C2PA detection.
"""
