"""Fixed points of the flow: closed forms for linear and ReLU, symmetry, roles."""

import numpy as np
import pytest

from lora_theory._errors import ParameterError
from lora_theory.fixed_points import fixed_points


def _by_position(points):
    return {(round(point.u, 6), round(point.m, 6)): point for point in points}


@pytest.mark.parametrize("mu", [0.2, 0.5, 0.8])
def test_linear_closed_forms(mu):
    # L = ((mu + u m - 1)^2 + u^2 (1 - m^2)) / 2. At (0, 0) the Jacobian is [[-1, 1 - mu], [1 - mu, 0]];
    # at (1 - mu, 1) it is [[-1, 1 - mu], [0, -2 (1 - mu)^2]] (derived by hand from dL/du, dL/dm).
    points = _by_position(fixed_points("x", mu=mu))
    assert set(points) == {(0.0, 0.0), (round(1 - mu, 6), 1.0), (round(mu - 1, 6), -1.0)}

    search = points[(0.0, 0.0)]
    A = 1 - mu
    expected = sorted([(-1 - np.sqrt(1 + 4 * A**2)) / 2, (-1 + np.sqrt(1 + 4 * A**2)) / 2])
    np.testing.assert_allclose(sorted(search.eigenvalues.real), expected, rtol=1e-10)
    assert search.stability == "saddle"
    assert search.role == "search point"

    minimum = points[(round(1 - mu, 6), 1.0)]
    np.testing.assert_allclose(sorted(minimum.eigenvalues.real), sorted([-1.0, -2 * A**2]), rtol=1e-9)
    assert minimum.role == "global minimum"
    assert abs(minimum.loss) < 1e-12


def test_relu_closed_forms():
    # A = (1 - mu)/2, B = -1/2 at (0, 0); on m = 1 the loss is (mu + u - 1)^2 / 4, so the minimum
    # (1 - mu, 1) has eigenvalues -1/2 (along u) and -(1 - mu)^2 (along m, half the linear value).
    mu = 0.5
    points = _by_position(fixed_points("relu", mu=mu))
    search = points[(0.0, 0.0)]
    A, B = (1 - mu) / 2, -0.5
    expected = sorted([(B - np.sqrt(B**2 + 4 * A**2)) / 2, (B + np.sqrt(B**2 + 4 * A**2)) / 2])
    np.testing.assert_allclose(sorted(search.eigenvalues.real), expected, rtol=1e-9)

    minimum = points[(0.5, 1.0)]
    # One-sided differences with step h = 1e-7 at the boundary m = 1, where the flow contains
    # |u| sqrt(1 - m^2): their error grows like sqrt(h) ~ 3e-4, so 1e-3 relative.
    np.testing.assert_allclose(sorted(minimum.eigenvalues.real), sorted([-0.5, -(1 - mu) ** 2]), rtol=1e-3)


@pytest.mark.parametrize("spec, mu", [("He3", 0.6), ("He2", 0.3), ("erf", 0.4)])
def test_symmetry_u_m(spec, mu):
    # (u, m) -> (-u, -m) leaves Q and R unchanged, so fixed points come in pairs with equal loss.
    points = fixed_points(spec, mu=mu)
    positions = _by_position(points)
    for (u_value, m_value), point in positions.items():
        mirror = (round(-u_value, 6) + 0.0, round(-m_value, 6) + 0.0)
        assert mirror in positions, (spec, mu, u_value, m_value)
        assert abs(positions[mirror].loss - point.loss) < 1e-9


def test_he3_spurious_attractor():
    # w = w0 + u v = 0 at (u, m) = (-mu, 1): the student outputs He3(0) = 0, loss E[He3^2]/2 = 3.
    points = _by_position(fixed_points("He3", mu=0.6))
    spurious = points[(-0.6, 1.0)]
    assert spurious.role == "spurious attractor"
    assert abs(spurious.loss - 3.0) < 1e-10


def test_fixed_points_bad_mu():
    with pytest.raises(ParameterError, match="mu"):
        fixed_points("x", mu=1.2)


def test_jacobian_method_recorded():
    # ReLU minima sit on the kink m = 1, where the generated Jacobian is not finite.
    points = _by_position(fixed_points("relu", mu=0.5))
    assert points[(0.0, 0.0)].jacobian_method == "symbolic"
    assert points[(0.5, 1.0)].jacobian_method == "one-sided differences"


def test_eigenvalues_sorted_by_real_part():
    # He3 at mu = 0.6: the minima at m = +-1 have eigenvalues -90 and -5.76 in some order from LAPACK.
    for point in fixed_points("He3", mu=0.6):
        values = list(point.eigenvalues)
        assert values == sorted(values, key=lambda value: (value.real, value.imag))


def test_constant_student_is_continuum():
    # He0 is constant, so the flow is identically zero and every point is fixed.
    from lora_theory.fixed_points import ContinuumOfFixedPointsError

    with pytest.raises(ContinuumOfFixedPointsError, match="continuum of fixed points"):
        fixed_points("He0", mu=0.5)


def test_cli_constant_student_one_line(capsys):
    from lora_theory.cli import main

    status = main(["fixed-points", "--student", "He0", "--mu", "0.5"])
    captured = capsys.readouterr()

    assert status == 2
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert "He0" in captured.err
