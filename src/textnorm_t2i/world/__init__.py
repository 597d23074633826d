"""The embedded synthetic world: scenes, prompt grammar, oracle judge, simulated annotators."""

from textnorm_t2i.world.annotators import annotate, simulate_votes, write_subset
from textnorm_t2i.world.grammar import Clause, Relation, Spec, near_misses, parse, sample_prompts
from textnorm_t2i.world.oracle import Verdict, detect, judge
from textnorm_t2i.world.scene import Scene, SceneObject, render, sample_scene

__all__ = ["Clause", "Relation", "Scene", "SceneObject", "Spec", "Verdict", "annotate", "detect", "judge",
           "near_misses", "parse", "render", "sample_prompts", "sample_scene", "simulate_votes", "write_subset"]
