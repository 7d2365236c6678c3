"""The tutorial's node with real draws: 250 inputs equal to 1, no bias, a sigmoid on top.

Run: .venv/bin/python examples/tutorial_node.py
"""

from rich.console import Console

from initlab.experiments.tutorial import tutorial_node, tutorial_table

if __name__ == "__main__":
    Console().print(tutorial_table(tutorial_node(n_inputs=250, draws=100_000, seed=0)))
