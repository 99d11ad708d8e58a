"""A model of the exceptions in the webui's modules/api/errors.py (v4.7.3), as the steering extension
meets them: it raises ``InvalidRequestError`` while a request body is read, and the API's handler sends
the error's ``message``, ``param`` and HTTP status ``code`` back as JSON."""


class OpenAIError(Exception):
    """A failure the client is told about, with the HTTP status ``code``."""

    def __init__(self, message: str | None = None, code: int = 500):
        super().__init__(message)
        self.message, self.code = message, code


class InvalidRequestError(OpenAIError):
    """The request itself is wrong; ``param`` names the field at fault."""

    def __init__(self, message: str, param: str | None, code: int = 400):
        super().__init__(message, code)
        self.param = param
