"""The code env's judge: the program that runs INSIDE the sandbox (stdlib only), laid out under /harness/judge/.

    judge (holds the job: hidden tests, expected values, a nonce; non-dumpable)
      -> launcher (forked before the job was read, so its memory never held the tests; a subreaper)
           -> candidate processes: the function's worker, or one process per stdin/stdout test

The judge runs the task's test code itself and talks to the candidate only in plain values (values.py); the
candidate's processes are forks of the launcher with only their own pipes, output and source. See docs/sandbox.md.
"""
