"""Regenerate the parameter table in docs/model.md from the parameter tree (python docs/make_model_table.py)."""

from pathlib import Path

from abm.params import parameter_table_markdown

BEGIN, END = "<!-- BEGIN PARAMETER TABLE -->", "<!-- END PARAMETER TABLE -->"
DOC = Path(__file__).resolve().parent / "model.md"


def render(text: str) -> str:
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{parameter_table_markdown()}{END}{tail}"


if __name__ == "__main__":
    DOC.write_text(render(DOC.read_text()))
    print(f"wrote the parameter table into {DOC}")
