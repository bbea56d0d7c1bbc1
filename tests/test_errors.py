"""defrcn.errors.InputError: the message the tools print, with the file or key first."""
from defrcn.errors import InputError


def test_message_names_the_path_first():
    error = InputError("not valid JSON", path="data/train.json")
    assert str(error) == "data/train.json: not valid JSON"
    assert error.path == "data/train.json"


def test_message_without_a_path_is_kept_as_given():
    error = InputError("solver.max_iter: expected an int")
    assert str(error) == "solver.max_iter: expected an int" and error.path is None

