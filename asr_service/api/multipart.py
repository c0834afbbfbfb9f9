"""Multipart bodies: one parser reading form fields and files together, and the file field."""

from __future__ import annotations

from typing import Any

from flask import Request
from flask_smorest import Blueprint
from flask_smorest.fields import Upload
from marshmallow import Schema, ValidationError
from webargs.flaskparser import FlaskParser
from webargs.multidictproxy import MultiDictProxy
from werkzeug.datastructures import CombinedMultiDict, FileStorage


class MultipartParser(FlaskParser):
    """Reads form fields together with files, so one schema documents the multipart body.

    flask-smorest documents each location separately, and a `form` location becomes an
    OpenAPI 2 `formData` parameter that OpenAPI 3 does not allow.
    """

    def load_files(self, req: Request, schema: Schema) -> MultiDictProxy:
        """The files and the form fields of the request, as one location."""
        return MultiDictProxy(CombinedMultiDict([req.files, req.form]), schema)


class MultipartBlueprint(Blueprint):
    """A blueprint whose `location="files"` arguments are the whole multipart body."""

    ARGUMENTS_PARSER = MultipartParser()


class FileUpload(Upload):
    """An uploaded file; a plain form field of the same name is a 422, not a crash."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, FileStorage):
            raise ValidationError("must be a file (multipart file part), not a text field")
        return value
