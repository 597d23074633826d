"""The embedded synthetic world: scenes, prompt grammar, oracle judge, simulated annotators."""

from textnorm.world.annotators import annotate, simulate_votes, write_subset
from textnorm.world.grammar import Clause, Relation, Spec, near_misses, parse, sample_prompts
from textnorm.world.oracle import Verdict, detect, judge
from textnorm.world.scene import Scene, SceneObject, render, sample_scene

__all__ = ["Clause", "Relation", "Scene", "SceneObject", "Spec", "Verdict", "annotate", "detect", "judge",
           "near_misses", "parse", "render", "sample_prompts", "sample_scene", "simulate_votes", "write_subset"]
