import os
import pickle

import numpy as np
import pytest

from edgeshrink.host import safe_pickle


def test_numpy_arrays_and_containers_load():
    obj = {"a": np.arange(6, dtype=np.float64).reshape(2, 3), "b": [1, 2.5, "x"], "c": np.float64(3.0)}
    out = safe_pickle.loads(pickle.dumps(obj, protocol=2))
    assert np.array_equal(out["a"], obj["a"]) and out["b"] == [1, 2.5, "x"]


@pytest.mark.parametrize("payload", [os.system, eval, pickle.loads])
def test_any_other_global_is_refused(payload):
    class Evil:
        def __reduce__(self):
            return (payload, ("1",))

    with pytest.raises(safe_pickle.UnsafePickleError, match="not allowed"):
        safe_pickle.loads(pickle.dumps(Evil()))
