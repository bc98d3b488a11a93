"""scikit-learn's parameter protocol for an estimator whose one parameter is a ``Config``.

scikit-learn tunes an estimator through ``get_params`` / ``set_params`` with nested
names (``GridSearchCV(clf, {"config__train__lr": [1e-3, 3e-3]})``) and clones it from
``get_params(deep=False)``. :class:`ConfigParameters` gives that to
:class:`fusion.classifier.FusionClassifier`, whose only constructor argument is
``config``: each section and setting of the :class:`fusion.config.Config` is a nested
parameter, and setting one changes a copy (the Config the user gave is never changed).
"""

from __future__ import annotations

from fusion.config import Config

__all__ = ["ConfigParameters"]


class ConfigParameters:
    """``get_params`` / ``set_params`` / ``__sklearn_tags__`` over ``self.config``."""

    config: Config | None

    def get_params(self, deep: bool = True) -> dict:
        """``config``; with ``deep`` also its sections and settings by scikit-learn's
        nested names (``config__train__lr``), which ``GridSearchCV`` tunes."""
        params = {"config": self.config}
        if deep and (self.config is None or isinstance(self.config, Config)):
            nested = (self.config if self.config is not None else Config()).params()
            params.update({f"config__{name}": value for name, value in nested.items()})
        return params

    def set_params(self, **params) -> ConfigParameters:
        """Set ``config``, or its settings by nested name (``config__train__lr=1e-3``)
        in a copy of it (:meth:`fusion.config.Config.with_params`): the Config given is never
        changed. ``fit`` checks the values, as scikit-learn expects."""
        unknown = sorted(k for k in params if k != "config" and not k.startswith("config__"))
        if unknown:
            raise ValueError(
                f"{type(self).__name__} has no parameter(s) {unknown}; it has 'config' and 'config__<setting>'"
            )
        if "config" in params:
            self.config = params["config"]
        nested = {k.removeprefix("config__"): v for k, v in params.items() if k != "config"}
        if nested:
            base = self.config if self.config is not None else Config()
            if not isinstance(base, Config):
                raise TypeError(f"config must be a Config to set {sorted(nested)}; got {base!r:.60}")
            self.config = base.with_params(**nested)
        return self

    def __sklearn_tags__(self):
        """scikit-learn's description, which ``GridSearchCV`` asks for: a classifier
        whose labels come with its data (a Dataset), not as ``y``."""
        from sklearn.utils import ClassifierTags, Tags, TargetTags

        return Tags("classifier", TargetTags(required=False), classifier_tags=ClassifierTags())
