r"""
One-digit additions asked in words, GSM8K style, as chat prompts: easy enough for a 135M chat model to get some right.

Rows have TRL's conversational `prompt` (one user message) and a `solution` column with the bare answer, the format
`trl_kimi.verifiers.math_reward` grades. A small chat model often rambles past the answer or
skips the anchor, which leaves RL a format to learn.

Example:
```python
>>> row = make_dataset(1, seed=0)[0]
>>> row["prompt"][0]["role"], row["solution"]
('user', '14')
>>> row["prompt"][0]["content"]
'Tom has 7 apples and buys 7 more. How many apples does he have now? Reply with "The answer is" and the number.'

```
"""

import random

from datasets import Dataset

from .._checks import check_number


__all__ = ["TEMPLATES", "make_dataset"]

TEMPLATES = (
    "Tom has {a} apples and buys {b} more. How many apples does he have now?",
    "What is {a} + {b}?",
    "A box holds {a} red balls and {b} blue balls. How many balls are in the box?",
    "Sara read {a} pages in the morning and {b} pages in the evening. How many pages did she read?",
    "There are {a} birds on a tree and {b} more land on it. How many birds are on the tree?",
)
# `math_reward` grades the number after the last "The answer is" (or a \boxed{}): a reply without one scores 0.
INSTRUCTION = 'Reply with "The answer is" and the number.'


def make_dataset(num: int, seed: int = 0, max_operand: int = 9) -> Dataset:
    """`num` problems a + b with 1 ≤ a, b ≤ `max_operand`, each in one of `TEMPLATES`, drawn from `seed`."""
    check_number("max_operand", max_operand, 1)
    rng = random.Random(seed)
    rows = {"prompt": [], "solution": []}
    for _ in range(num):
        a, b = rng.randint(1, max_operand), rng.randint(1, max_operand)
        question = f"{rng.choice(TEMPLATES).format(a=a, b=b)} {INSTRUCTION}"
        rows["prompt"].append([{"role": "user", "content": question}])
        rows["solution"].append(str(a + b))
    return Dataset.from_dict(rows)
