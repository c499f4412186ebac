"""The loaders' error tree."""

from __future__ import annotations

import copyreg
import pickle

import pytest

from saec.errors import SaecError
from saec.loaders import errors

BUILTINS = {
    errors.InputNotFoundError: FileNotFoundError,
    errors.UnreadableInputError: OSError,
    errors.UnknownFormatError: OSError,
    errors.MissingDependencyError: ImportError,
    errors.MissingFieldError: KeyError,
    errors.MissingArrayError: KeyError,
    errors.UnsupportedDtypeError: TypeError,
}

ALL = [
    cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, errors.LoaderError)
]


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_every_error_is_a_saec_value_error(cls: type[errors.LoaderError]) -> None:
    error = cls("expected 1, found 2", path="/data/t.npz", field="user")
    assert isinstance(error, SaecError) and isinstance(error, ValueError)
    assert isinstance(error, BUILTINS.get(cls, ValueError))
    # KeyError and OSError would otherwise reformat the message.
    assert str(error) == "/data/t.npz: field 'user': expected 1, found 2"
    assert (error.path, error.field) == ("/data/t.npz", "user")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls and str(copy) == str(error) and copy.field == "user"


def test_errors_pickle_under_tblib_as_dask_installs_it() -> None:
    """distributed installs tblib's exception pickling in every process that imports it;
    the errors must still travel between processes, the OSError ones included."""
    pickling_support = pytest.importorskip("tblib.pickling_support")
    pickling_support.install(*ALL)
    try:
        for cls in ALL:
            error = cls("expected 1, found 2", path="/data/t.npz", field="user")
            copy = pickle.loads(pickle.dumps(error))
            assert type(copy) is cls and str(copy) == str(error) and (copy.path, copy.field) == (error.path, error.field)
    finally:
        for cls in ALL:
            copyreg.dispatch_table.pop(cls, None)


def test_path_and_field_are_optional() -> None:
    assert str(errors.SpecError("bad")) == "bad"
    assert str(errors.LoaderError("bad", field="f")) == "field 'f': bad"
