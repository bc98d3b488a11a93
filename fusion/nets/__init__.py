"""The torch modules: image backbones (:mod:`.backbones`, registered in
:mod:`.registry`), the tabular MLP (:mod:`.tabular`), the fusion heads that join the
branches (:mod:`.heads`, registered there) and the joint late-fusion network
(:mod:`.joint`). Importing this package imports nothing heavy."""
