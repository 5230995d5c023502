"""The test suite, a package: pytest imports its modules as tests.X (rootdir on sys.path), and
the tests, benches and fuzz runner import the shared helpers (tests.conftest, tests.inproc,
tests.pgserver, tests.fuzz.*) under that one name."""
