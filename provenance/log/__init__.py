"""The transparency log's pure core: RFC 9162 Merkle math and C2SP signed checkpoints."""
