"""The tests, one package per layer of src/initlab (initializers, theory, plan, inspect, experiments) and the
cross-cutting ones at the top. Packages, so that tests/inspect is imported as ``tests.inspect`` and never
shadows the standard library's ``inspect``; shared helpers: ``tests._models``, ``tests.inspect.test_inspect_models``."""
