"""A procedurally generated captioned world: scenes, renderer, oracle and edit judge.

The embedded default model is trained on this world so that the whole method runs offline and
can be measured (the oracle reads generated images back into scenes).
"""
