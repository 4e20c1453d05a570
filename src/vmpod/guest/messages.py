"""The one source of the agent protocol's numbers.

`docs/protocol.md` is the normative text; this module holds its numbers. `agent/protocol.h` is generated
from it (`python -m vmpod.guest.cheader`) and a unit test fails when the two drift.
"""

from enum import IntEnum

PROTOCOL_VERSION = 1
HEADER_SIZE = 12
# Largest payload either side accepts; a bigger frame is a protocol error.
MAX_PAYLOAD = 1 << 20
# Largest payload of one STDIN/STDOUT/STDERR frame.
MAX_DATA = 1 << 16
# Bytes of one stream that may be in flight before the receiver acknowledges them.
STREAM_WINDOW = 1 << 18
# Process handle of the container's main process.
MAIN_PROCESS = 1
# The virtio-serial port name under which the agent looks for its channel.
CHANNEL_NAME = "org.vmpod.agent.0"


class Message(IntEnum):
    """Frame types; numbers are never reused."""

    READY = 1
    OK = 2
    ERROR = 3
    START = 16
    SIGNAL = 17
    RESIZE = 18
    SHUTDOWN = 19
    EXEC = 20
    MACHINE = 21
    STDIN = 32
    STDIN_CLOSE = 33
    STDOUT = 34
    STDERR = 35
    OUTPUT_ACK = 36
    STDIN_ACK = 37
    EXIT = 38


class Field(IntEnum):
    """Tags of the fields inside control messages; numbers are never reused."""

    PROTO_VERSION = 1
    AGENT_VERSION = 2
    ERRNO = 3
    MESSAGE = 4
    PID = 5
    ROOT_DEVICE = 16
    ROOT_FSTYPE = 17
    HOSTNAME = 18
    ARG = 19
    ENV = 20
    CWD = 21
    UID = 22
    GID = 23
    GROUP = 24
    TERMINAL = 25
    ROWS = 26
    COLS = 27
    STDIN_OPEN = 28
    SIGNO = 29
    PROCESS = 30
    COUNT = 31
    EXIT_CODE = 32
    EXIT_SIGNAL = 33
    ROOT_READONLY = 34
    MOUNT = 35
    FILE = 36
    NET_ADDRESS = 37
    NET_GATEWAY = 38
    RLIMIT = 39
    NO_NEW_PRIVS = 40
    CAPS = 41
    TIME = 42
    SEED = 43
    MAC = 44
