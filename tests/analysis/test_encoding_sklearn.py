"""scikit-learn estimator checks for the encoding estimators."""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from neurofm.analysis.encoding import BandedRidgeCV, Delayer, KernelRidgeCV, RidgeCV

# The only checks skipped are those that cannot apply to a time-series transformer:
# a FIR delay copies sample t - d into row t, so its output depends on the order and on the
# presence of the other samples by design.
_DELAYER_INAPPLICABLE = {
    "check_methods_sample_order_invariance":
        "FIR delays mix neighbouring time samples: output depends on sample order",
    "check_methods_subset_invariance":
        "FIR delays mix neighbouring time samples: a subset has other neighbours",
}


def _expected_failed_checks(estimator):
    return _DELAYER_INAPPLICABLE if isinstance(estimator, Delayer) else {}


@parametrize_with_checks(
    [RidgeCV(), KernelRidgeCV(), KernelRidgeCV(kernel="rbf", fit_intercept=True),
     BandedRidgeCV(n_iter=3, random_state=0), RidgeCV(backend="torch"), Delayer()],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
