"""Entry point of the sandbox's child interpreters.

Started by the harness as ``python -I -S /abs/path/harness/sandbox/child/__main__.py MODE ...``
with MODE ``zygote CHANNEL_FD UNSHARE_FLAGS`` or ``probe`` (see ``zygote.py`` and ``probe.py``).
"""

import sys


def import_child_package():
    """Import this directory as the top-level package ``child``.

    ``-I`` keeps the script's directory off ``sys.path``; we put the parent there just long
    enough to import the package (its modules use relative imports), then take it off again so
    that the untrusted program cannot import the harness's own modules by name.
    """
    parent = __file__.rpartition("/")[0].rpartition("/")[0]
    sys.path.insert(0, parent)
    try:
        import child
    finally:
        sys.path.remove(parent)
    return child


def main(argv):
    import_child_package()
    mode = argv[1]
    if mode == "zygote":
        from child import zygote

        zygote.zygote(int(argv[2]), int(argv[3]))
    elif mode == "probe":
        from child import probe

        probe.main()
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv)
