"""Detection rules as data. :mod:`~streams.detect.fields` (what a condition reads),
:mod:`~streams.detect.model` (rules, rule sets, detections), :mod:`~streams.detect.state`
(``RuleState``), :mod:`~streams.detect.engine` (evaluation) with :mod:`~streams.detect.checks`
(each kind's check), :mod:`~streams.detect.identity` (identity-event rules),
:mod:`~streams.detect.exceptions` (rule exceptions), :mod:`~streams.detect.responses`
(the actions a fired rule asks for), :mod:`~streams.detect.load` with
:mod:`~streams.detect.load_values` and :mod:`~streams.detect.load_cases` (reading ``rules/``),
:mod:`~streams.detect.testing` (``accessguard rules test``). No clock, no network; only loading
reads files."""
