"""Read TensorBoard event files back without TensorBoard (not in the pinned stack).

An event file is a sequence of TFRecords: `uint64 length | uint32 masked_crc(length) |
payload | uint32 masked_crc(payload)`, each payload an `Event` protobuf (tensorboardX's
copy of the proto). Used by tests and by anyone checking a run's curves in a script:

    scalars(read_events("output/toy_base"))["loss/total_loss"]  -> [(step, value), ...]
"""
import os
import struct
from pathlib import Path

# MindSpore's own protobuf files need the pure-python protobuf (it sets this when imported,
# mindspore/run_check/_check_version.py); choosing it here too keeps `import mindspore`
# working after these readers loaded protobuf first.
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")

__all__ = ["masked_crc", "read_events", "scalars"]

CRC_MASK_DELTA = 0xA282EAD8  # TFRecord's masked CRC-32C constant (tensorflow/core/lib/hash/crc32c.h)


def masked_crc(data):
    """TFRecord's masked CRC-32C of `data` (bytes)."""
    from tensorboardX.crc32c import crc32c

    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + CRC_MASK_DELTA) & 0xFFFFFFFF


def _records(data, source):
    offset = 0
    while offset < len(data):
        header = data[offset:offset + 8]
        if len(header) < 8:
            raise ValueError(f"{source}: truncated record header at byte {offset}")
        (length,) = struct.unpack("<Q", header)
        if struct.unpack("<I", data[offset + 8:offset + 12])[0] != masked_crc(header):
            raise ValueError(f"{source}: bad length CRC at byte {offset}")
        payload = data[offset + 12:offset + 12 + length]
        footer = data[offset + 12 + length:offset + 16 + length]
        if len(payload) < length or len(footer) < 4 or struct.unpack("<I", footer)[0] != masked_crc(payload):
            raise ValueError(f"{source}: bad or truncated payload at byte {offset}")
        yield payload
        offset += 16 + length


def read_events(logdir):
    """Every `Event` proto of every `events.out.tfevents.*` file under `logdir` (recursive,
    files in name order), checking each record's CRCs (ValueError naming the file if bad)."""
    from tensorboardX.proto import event_pb2

    events = []
    for path in sorted(Path(logdir).rglob("events.out.tfevents.*")):
        for payload in _records(path.read_bytes(), path):
            event = event_pb2.Event()
            event.ParseFromString(payload)
            events.append(event)
    return events


def scalars(events):
    """{tag: [(step, value), ...]} of the scalar summaries in `events`, in file order."""
    found = {}
    for event in events:
        for value in event.summary.value:
            if value.HasField("simple_value"):
                found.setdefault(value.tag, []).append((event.step, value.simple_value))
    return found
