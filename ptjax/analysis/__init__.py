"""Reading run outputs: prompt interpretability (nearest vocabulary neighbours).

Never imports `ptjax.train`.
"""

from ptjax.analysis.neighbours import frequent_neighbours, nearest_neighbours, neighbour_report
