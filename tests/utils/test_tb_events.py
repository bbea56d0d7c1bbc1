"""defrcn.utils.tb_events: TensorBoard event files written by tensorboardX read back (every
file under a folder, in name order), and damaged records refused with the file named."""
import struct

import pytest
from tensorboardX import SummaryWriter

from defrcn.utils.tb_events import masked_crc, read_events, scalars


def write_scalars(logdir, tag, points):
    writer = SummaryWriter(logdir=str(logdir))
    for step, value in points:
        writer.add_scalar(tag, value, step)
    writer.close()


def event_file(logdir):
    (path,) = logdir.glob("events.out.tfevents.*")
    return path


def test_masked_crc_of_the_crc32c_check_string():
    # CRC-32C("123456789") = 0xE3069283 (the standard check value), rotated right by 15, plus the delta
    assert masked_crc(b"123456789") == (((0xE3069283 >> 15) | (0xE3069283 << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    assert masked_crc(b"") == 0xA282EAD8


def test_scalars_of_every_file_under_the_folder(tmp_path):
    write_scalars(tmp_path / "b_eval", "eval/AP", [(10, 40.5)])
    write_scalars(tmp_path / "a_train", "loss/total_loss", [(1, 2.0), (2, 1.5), (3, 1.25)])
    events = read_events(tmp_path)
    assert events[0].HasField("file_version")  # each file starts with its version record
    assert scalars(events) == {"loss/total_loss": [(1, 2.0), (2, 1.5), (3, 1.25)], "eval/AP": [(10, 40.5)]}
    assert list(scalars(events)) == ["loss/total_loss", "eval/AP"]  # a_train's file is read first
    assert read_events(tmp_path / "none") == []


def test_a_flipped_payload_byte_names_the_file(tmp_path):
    write_scalars(tmp_path, "lr", [(1, 0.5)])
    path = event_file(tmp_path)
    data = bytearray(path.read_bytes())
    (first_length,) = struct.unpack("<Q", data[:8])
    data[16 + first_length + 12] ^= 0xFF  # first payload byte of the second record
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{path}: bad or truncated payload at byte {16 + first_length}"):
        read_events(tmp_path)


def test_a_truncated_file_names_the_file(tmp_path):
    write_scalars(tmp_path, "lr", [(1, 0.5)])
    path = event_file(tmp_path)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError, match=f"{path}: bad or truncated payload"):
        read_events(tmp_path)
    path.write_bytes(path.read_bytes()[:5])
    with pytest.raises(ValueError, match=f"{path}: truncated record header at byte 0"):
        read_events(tmp_path)
