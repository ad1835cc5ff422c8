"""Single-row TreeSHAP through LightGBM's ``SingleRowFast`` C API.

``Booster.predict`` re-validates its input, rebuilds the prediction parameters and
allocates a predictor on every call: for one row that wrapper costs several times what
TreeSHAP itself costs on small trees. The C library's fast path keeps one prepared
predictor per booster (a ``FastConfig``) and takes a pointer to a contiguous float64 row,
so one call is one ``pred_contrib`` evaluation and nothing else. The numbers are those of
``Booster.predict(..., pred_contrib=True)`` (same C++ predictor, same row function).
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from typing import Any

import lightgbm as lgb
import numpy as np
from lightgbm.basic import _safe_call
from lightgbm.libpath import _LIB

_PREDICT_CONTRIB = 3  # C_API_PREDICT_CONTRIB
_DTYPE_FLOAT64 = 1  # C_API_DTYPE_FLOAT64


class ContribPredictor:
    """One prepared ``pred_contrib`` predictor of a booster, for one row at a time."""

    def __init__(self, booster: lgb.Booster) -> None:
        # Holding the booster keeps its handle alive for as long as the FastConfig is.
        self._booster = booster
        self.num_features = booster.num_feature()
        self._out_len = self.num_features + 1
        self._handle = ctypes.c_void_p()
        self._len = ctypes.c_int64(0)
        # The FastConfig is not re-entrant (it owns one output and row buffer).
        self._lock = threading.Lock()
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,  # the C API takes the booster's own handle
                ctypes.c_int(_PREDICT_CONTRIB),
                ctypes.c_int(0),
                ctypes.c_int(-1),
                ctypes.c_int(_DTYPE_FLOAT64),
                ctypes.c_int32(self.num_features),
                ctypes.c_char_p(b"num_threads=1"),
                ctypes.byref(self._handle),
            )
        )
        self._fn: Any = _LIB.LGBM_BoosterPredictForMatSingleRowFast
        self._len_ref = ctypes.byref(self._len)

    def contributions(self, row: np.ndarray) -> np.ndarray:
        """SHAP values of every feature followed by the bias, for one float64 row."""
        if row.dtype != np.float64 or row.ndim != 1 or row.shape[0] != self.num_features:
            raise ValueError(f"expected a float64 row of {self.num_features} features")
        if not row.flags.c_contiguous:
            row = np.ascontiguousarray(row)
        out = np.empty(self._out_len, dtype=np.float64)
        with self._lock:
            _safe_call(
                self._fn(
                    self._handle,
                    ctypes.c_void_p(row.ctypes.data),
                    self._len_ref,
                    ctypes.c_void_p(out.ctypes.data),
                )
            )
        return out

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None and handle.value:
            # At interpreter shutdown the library may already be gone: nothing to free.
            with contextlib.suppress(Exception):
                _LIB.LGBM_FastConfigFree(handle)
            handle.value = None
