"""The guest-clock check that keeps runs with a miscalibrated TSC out of the results."""

from vmtest import run as experiment


def test_clock_ratio():
    assert experiment.clock_ratio((100.0, 10.0), (200.0, 110.0)) == 1.0
    # one seed run: a TSC calibrated at 362 MHz instead of 2445 MHz
    assert experiment.clock_ratio((0.0, 14.0), (1175.0, 14.0 + 2500.0)) == 2.128
    assert abs(experiment.clock_ratio((0.0, 0.0), (100.0, 103.0)) - 1) <= \
        experiment.CLOCK_TOLERANCE


def test_clock_ratio_needs_two_readings_apart():
    assert experiment.clock_ratio(None, (10.0, 10.0)) is None
    assert experiment.clock_ratio((0.0, 0.0), (1.0, 1.0)) is None  # too short to judge
