"""Helpers of the verification tests."""

import numpy as np


def rotation_error_deg(a, b):
    """Angle (deg) of the rotation a @ inv(b)."""
    d = np.asarray(a) @ np.linalg.inv(np.asarray(b))
    return float(np.degrees(np.arccos(np.clip((np.trace(d[:3, :3]) - 1) / 2, -1, 1))))


def one_line(exc) -> str:
    """The message of an exception, asserted to be one clear line."""
    text = str(exc.value)
    assert "\n" not in text and text.strip() == text and len(text) > 20, text
    return text
