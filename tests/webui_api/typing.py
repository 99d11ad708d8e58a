"""modules/api/typing.py of text-generation-webui v4.7.3, reduced: the request models' shape (pydantic
models that drop unknown fields, built on GenerationOptions) and ``to_dict`` (the model's ``__dict__``)."""
from typing import List

from pydantic import BaseModel, Field, model_validator


class GenerationOptions(BaseModel):
    preset: str | None = None
    do_sample: bool = True
    seed: int = -1
    add_bos_token: bool = True
    skip_special_tokens: bool = True
    truncation_length: int = 0


class CompletionRequestParams(BaseModel):
    model: str | None = None
    prompt: str | List[str] | None = None
    max_tokens: int | None = 512
    n: int | None = 1
    stop: str | List[str] | None = None
    stream: bool | None = False
    temperature: float | None = 1.0
    top_p: float | None = 1.0

    @model_validator(mode='after')
    def validate_prompt_or_messages(self):
        if self.prompt is None:
            raise ValueError("Either 'prompt' or 'messages' must be provided")
        return self


class CompletionRequest(GenerationOptions, CompletionRequestParams):
    pass


class ChatCompletionRequestParams(BaseModel):
    messages: List[dict] = Field(..., min_length=1)
    model: str | None = None
    max_tokens: int | None = None
    stop: str | List[str] | None = None
    stream: bool | None = False
    temperature: float | None = 1.0
    top_p: float | None = 1.0
    mode: str = 'instruct'
    character: str | None = None
    bot_name: str | None = Field(default=None, alias="name2")
    context: str | None = None
    user_name: str | None = Field(default=None, alias="name1")


class ChatCompletionRequest(GenerationOptions, ChatCompletionRequestParams):
    pass


def to_dict(obj):
    return obj.__dict__
