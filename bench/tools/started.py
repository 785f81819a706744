"""Starting a coordinator for the tools here: shared by connection_memory.py and
stream_instructions.py."""
import re
import subprocess
import sys


def start(argv):
    """Runs ARGV, a coordinator listening on 127.0.0.1 port 0, and returns the
    process and the port it says it took; exits if it says none."""
    coordinator = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)
    for line in coordinator.stdout:
        found = re.search(r"127\.0\.0\.1:(\d+)", line)
        if found:
            return coordinator, int(found.group(1))
    coordinator.kill()
    sys.exit(f"the coordinator did not start: {' '.join(argv)}")
