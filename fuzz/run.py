"""Run one fuzz target under atheris (libFuzzer, in process).

    python -m fuzz.run {decoder,handshake,step} [libFuzzer flags and corpus dirs]

The ``pbft`` and ``faults`` packages are imported under atheris' bytecode
instrumentation, so libFuzzer sees their branch coverage; msgpack's C core and
the crypto libraries are not instrumented. ``scripts/fuzz.py`` is the usual
way in: it sets the time budget and merges new inputs into ``fuzz/corpus``.
"""

from __future__ import annotations

import sys

TARGETS = ("decoder", "handshake", "step")


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: python -m fuzz.run {{{','.join(TARGETS)}}} [libFuzzer arguments]")
    try:
        import atheris
    except ImportError:
        sys.exit("atheris is not installed: pip install -e '.[fuzz]' (Linux x86_64 only)")
    name = argv[1]
    with atheris.instrument_imports(include=["pbft", "faults"]):
        if name == "step":
            from fuzz.step import step as target
            from fuzz.step import world

            world()  # build the honest pool once, before fuzzing starts
        else:
            from fuzz import targets

            target = getattr(targets, name)
    # libFuzzer re-runs argv[0] through the shell for -merge=1 and -fork: name the
    # command that starts this target again, not this (not executable) file.
    command = f"{sys.executable} -m fuzz.run {name}"
    atheris.Setup([command, *argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
