"""``module:function`` rewards the GRPO tests name in method.grpo.rewards."""


def first_char_is_digit(prompt: str, completion: str, row: dict) -> float:
    return float(completion[:1].isdigit())


def raises_on_odd(prompt: str, completion: str, row: dict) -> float:
    if "odd" in row["output"]:
        raise ValueError("no odd rows here")
    return 1.0


def scores_text(text: str) -> float:
    """Not a reward: it does not take prompt, completion and row."""
    return float(len(text))
