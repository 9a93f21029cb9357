"""Code that runs inside the sandbox's child processes (zygote, supervisor/checker, runner, probe).

These modules are started per worker as ``python -I -S .../harness/sandbox/child/__main__.py``
and import only cheap standard modules (``os``, ``sys``, ``marshal``, ``resource``, ``select``,
``_signal``, ``_ctypes``; ``socket`` in the zygote): no ``site``, no third-party packages,
nothing else of the project. They use relative imports only, so they load both as
``harness.sandbox.child.*`` (tests, linters) and as the top-level package ``child`` inside the
sandbox.
"""
