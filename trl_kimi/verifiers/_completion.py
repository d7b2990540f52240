"""The text of a completion as TRL hands it to a reward function, shared by the math and code verifiers."""

from typing import Any


def completion_text(completion: Any) -> str | None:
    r"""
    Text of a standard (`str`) or conversational (list of messages) completion; `None` if it has none.

    A conversational completion is graded by its last assistant message; multimodal content parts (`[{"type": "text",
    "text": ...}, ...]`) are joined. Bytes are decoded as UTF-8 (invalid bytes replaced). Anything else (`None`, a
    number, a list without an assistant message) has no text.

    Example:

    ```python
    >>> completion_text([{"role": "assistant", "content": [{"type": "text", "text": "\\boxed{7}"}]}])
    '\\boxed{7}'
    >>> completion_text([{"role": "user", "content": "hi"}]) is None
    True

    ```
    """
    if isinstance(completion, bytes):
        return completion.decode("utf-8", errors="replace")
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        for message in reversed(completion):
            if isinstance(message, dict) and message.get("role", "assistant") == "assistant":
                content = message.get("content")
                if isinstance(content, list):  # multimodal message: [{"type": "text", "text": ...}, ...]
                    content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
                return content if isinstance(content, str) else None
    return None
