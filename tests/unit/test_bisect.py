import pytest

from vmtest import bisect


@pytest.mark.parametrize("doc,code", [
    ({"verdict": "ok", "metrics": {"m": 3}}, bisect.GOOD),
    ({"verdict": "ok", "metrics": {"m": 30}}, bisect.BAD),
    ({"verdict": "kernel-crash", "metrics": {}}, bisect.BAD),
    ({"verdict": "hang"}, bisect.BAD),
    ({"verdict": "infrastructure", "error": "QEMU died"}, bisect.SKIP),
    ({"verdict": "ok", "metrics": {}}, bisect.SKIP),
])
def test_judge(doc, code):
    assert bisect.judge(doc, "m", 10)[0] == code
