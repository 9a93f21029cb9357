"""Code that runs inside the sandbox's child processes (zygote, supervisor, runner, probe).

These modules are started per worker as ``python -I -S .../harness/sandbox/child/__main__.py``
and import only cheap modules built into the interpreter (``os``, ``sys``, ``marshal``,
``resource``, ``_signal``, ``_ctypes``): no ``site``, no third-party packages, nothing else of
the project. They use relative imports only, so they load both as ``harness.sandbox.child.*``
(tests, linters) and as the top-level package ``child`` inside the sandbox.
"""
