# SPDX-License-Identifier: Apache-2.0
"""The README's main command: tools/demo runs the whole main job (troved on
the embedded default, a push, a trovefs mount, programs run from it, a plain
Nix substitution) against the build under test, as a user runs it: output to
a file and to a pipe, no terminal, no standard input."""

import os
import subprocess

import trovetest


def run_demo(stdout, close_stdin):
    cmd = [str(trovetest.SOURCE_DIR / "tools" / "demo"), str(trovetest.build_dir())]
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.STDOUT,
                         env=dict(os.environ),
                         preexec_fn=(lambda: os.close(0)) if close_stdin else None)
    out, _ = p.communicate(timeout=900)
    return p.returncode, out


def check(rc, text):
    tail = "\n".join(text.splitlines()[-40:])
    assert rc == 0, f"tools/demo exited {rc}:\n{tail}"
    assert text.rstrip().splitlines()[-1] == "demo complete", tail
    assert "\x1b[" not in text, "colours written to something that is not a terminal"


def test_demo_output_to_file_without_stdin(tmp_path):
    log = tmp_path / "demo.log"
    with open(log, "wb") as f:
        rc, _ = run_demo(f, close_stdin=True)
    check(rc, log.read_text(errors="replace"))


def test_demo_output_to_pipe():
    # A pipe ends only when every writer has closed it: a program the demo
    # left in the background holding it would hang this run.
    rc, out = run_demo(subprocess.PIPE, close_stdin=False)
    check(rc, out.decode(errors="replace"))
