"""Looking inside a trained model: what each neuron does over a text.

One module per concern:

- tracing.py: Trace and trace() (every layer's h, c and gates, recomputed step by step from
  the layers' weights), trace_text() (a text as training reads it), the names of a cell's
  trace keys and the range each lives in.
- features.py: the features of a text that neurons are compared with (bracket depth,
  inside quotes, ..., or any regex) and feature(), which picks one by name.
- ranking.py: Pearson r and selectivity per unit, the strongest contexts, the rankings,
  and gate saturation per layer (Karpathy, Johnson & Fei-Fei 2015, figure 3).
- page.py: glyphs and the colour scale (defined once, for the terminal view and the page
  alike), and the self-contained HTML page: page_data() and html_page(), which fills
  page.html (package data) with it.

Nothing here prints or reads files: the cli package renders what these return. This
module re-exports what the CLI and the tests use.
"""

from charrnn.neurons.features import (
    bracket_depth,
    feature,
    indentation,
    inside_comment,
    inside_quotes,
    position_in_line,
    start_of_word,
)
from charrnn.neurons.page import colour, glyph, html_page, page_data, shade, unit_scale
from charrnn.neurons.ranking import gate_saturation, pearson, rank_by_feature, rank_by_selectivity
from charrnn.neurons.tracing import (
    Trace,
    activation,
    label,
    state_name,
    state_names,
    trace,
    trace_text,
    value_range,
)

__all__ = [
    "Trace",
    "activation",
    "bracket_depth",
    "colour",
    "feature",
    "gate_saturation",
    "glyph",
    "html_page",
    "indentation",
    "inside_comment",
    "inside_quotes",
    "label",
    "page_data",
    "pearson",
    "position_in_line",
    "rank_by_feature",
    "rank_by_selectivity",
    "shade",
    "start_of_word",
    "state_name",
    "state_names",
    "trace",
    "trace_text",
    "unit_scale",
    "value_range",
]
