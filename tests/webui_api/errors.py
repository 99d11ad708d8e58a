"""modules/api/errors.py of text-generation-webui v4.7.3 (the classes the API's handlers know)."""


class OpenAIError(Exception):
    def __init__(self, message=None, code=500, internal_message=''):
        self.message = message
        self.code = code
        self.internal_message = internal_message


class InvalidRequestError(OpenAIError):
    def __init__(self, message, param, code=400, internal_message=''):
        super().__init__(message, code, internal_message)
        self.param = param
