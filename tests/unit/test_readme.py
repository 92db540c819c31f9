"""The README's recipe reference is the schema's, and its two commands are the real ones."""

from pathlib import Path

from lwz.recipe.reference import END, START, embed

README = Path(__file__).resolve().parents[2] / "README.md"


def test_recipe_reference_in_sync_with_schema():
    text = README.read_text()
    assert START in text and END in text
    assert embed(text) == text, "run: python -m lwz.recipe.reference README.md"


def test_readme_names_the_two_commands():
    text = README.read_text()
    assert "lwz run recipes/demo.yaml" in text and "bash .ci/run" in text
