# ruff: noqa: RUF001  (Cyrillic letters in the ru/kk catalogues are intended)
"""Message catalogues for problem details: Kazakh (`kk`), Russian (`ru`), English (`en`).

Handlers never build human-readable text themselves: they raise a domain error
with a code and parameters, and the error handler looks the code up here in the
language that `Accept-Language` asks for. Two catalogues:

- `PROBLEMS`: code → (title, detail template) for a whole problem;
- `FIELDS`: error type → message template for one entry of a 422's `errors`
  (pydantic's types plus ours); unknown types fall back to pydantic's message.

Templates use `str.format` named fields; a missing parameter never raises.
"""

from __future__ import annotations

import re
import string
from typing import Any, Final, NamedTuple

LANGUAGES: Final = ("en", "ru", "kk")
DEFAULT_LANGUAGE: Final = "en"


class Message(NamedTuple):
    title: str
    detail: str


def negotiate(accept_language: str | None) -> str:
    """The best supported language for an `Accept-Language` header (RFC 9110 q-values)."""
    if not accept_language:
        return DEFAULT_LANGUAGE
    best, best_q = DEFAULT_LANGUAGE, -1.0
    for order, part in enumerate(accept_language.split(",")):
        piece = part.strip()
        if not piece:
            continue
        tag, _, params = piece.partition(";")
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary == "*":
            primary = DEFAULT_LANGUAGE
        # earlier entries win ties (the header's own order)
        score = q - order * 1e-6
        if primary in LANGUAGES and q > 0 and score > best_q:
            best, best_q = primary, score
    return best


class _Lenient(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _fill(template: str, params: dict[str, Any]) -> str:
    return string.Formatter().vformat(template, (), _Lenient(params))


PROBLEMS: Final[dict[str, dict[str, Message]]] = {
    "en": {
        "bad_request": Message("Bad request", "The request cannot be processed."),
        "not_authenticated": Message("Not authenticated", "Sign in and send the access token as a Bearer token."),
        "invalid_token": Message("Invalid token", "The access token is invalid or has expired."),
        "invalid_credentials": Message("Invalid credentials", "The username or password is wrong."),
        "too_many_attempts": Message("Too many attempts", "Too many failed sign-ins: try again in {retry_after} s."),
        "totp_required": Message("Second factor required", "Send the current code of your authenticator app as `totp`."),
        "invalid_totp": Message("Wrong code", "The authenticator code is wrong, expired or used already."),
        "totp_setup_required": Message("Second factor not set up", "Your role requires a second factor: set it up at `/api/v1/me/totp` first."),
        "totp_not_started": Message("Nothing to confirm", "Start with action `enable` first."),
        "totp_required_by_role": Message("Second factor required", "Your role or account requires the second factor; it cannot be turned off."),
        "wrong_password": Message("Wrong password", "The current password is wrong."),
        "account_locked": Message("Account locked", "Too many failed sign-ins: the account is locked until {until}."),
        "forbidden": Message("Forbidden", "Your role may not do this."),
        "not_found": Message("Not found", "No such resource, or you may not see it."),
        "method_not_allowed": Message("Method not allowed", "This resource does not support this method."),
        "conflict": Message("Conflict", "The request conflicts with the current state of the resource."),
        "validation_failed": Message("Invalid request", "One or more fields are invalid."),
        "internal_error": Message("Internal error", "Something went wrong on our side. Quote request id {request_id} when reporting it."),
        "http_error": Message("HTTP error", "The request failed with status {status}."),
        "username_taken": Message("Username taken", "A user named {username} exists already."),
        "iin_taken": Message("Person exists", "A person with this IIN is registered already."),
        "iin_unavailable": Message("IIN not available", "A person with this IIN cannot be registered from your account; an administrator can check it."),
        "confirmation_needs_supervisor": Message("Supervisor decision", "How many fixes and seconds confirm a violation of a case is set by a supervisor or an administrator."),
        "subject_other_case": Message("Person under another case", "The person has an active case outside your caseload, or replacing their template needs a supervisor of their case; ask that case's supervisor or an administrator."),
        "serial_taken": Message("Serial taken", "A device with serial {serial} is registered already."),
        "case_closed": Message("Case closed", "The case is closed and cannot be changed."),
        "device_in_use": Message("Device in use", "The device serves another active case."),
        "device_already_assigned": Message("Already assigned", "The device is assigned to this case already."),
        "no_active_assignment": Message("Not assigned", "The device is not assigned to this case."),
        "no_device": Message("No device", "The case has no active device to send the request to."),
        "alert_transition": Message("Invalid alert transition", "An alert that is {current} cannot be {target}."),
        "zone_not_shared": Message("Zone not shared", "Only shared zones can be attached to several cases."),
        "zone_already_attached": Message("Already attached", "The zone is attached to this case already."),
        "zone_deleted": Message("Zone deleted", "The zone has been deleted."),
        "idempotency_in_progress": Message("Request in progress", "A request with this Idempotency-Key is still being processed."),
        "idempotency_key_reused": Message("Idempotency-Key reused", "This Idempotency-Key was used for a different request."),
        "service_unavailable": Message("Service unavailable", "A backend service is unavailable; try again shortly."),
        "rate_limited": Message("Too many requests", "You have made {limit} such requests in {minutes} minutes; try again later."),
    },
    "ru": {
        "bad_request": Message("Неверный запрос", "Запрос не может быть обработан."),
        "not_authenticated": Message("Требуется вход", "Войдите в систему и передайте токен доступа как Bearer-токен."),
        "invalid_token": Message("Недействительный токен", "Токен доступа недействителен или истёк."),
        "invalid_credentials": Message("Неверные учётные данные", "Неверное имя пользователя или пароль."),
        "too_many_attempts": Message("Слишком много попыток", "Слишком много неудачных попыток входа: повторите через {retry_after} с."),
        "totp_required": Message("Нужен второй фактор", "Передайте текущий код приложения-аутентификатора в поле `totp`."),
        "invalid_totp": Message("Неверный код", "Код аутентификатора неверен, устарел или уже использован."),
        "totp_setup_required": Message("Второй фактор не настроен", "Ваша роль требует второй фактор: сначала настройте его в `/api/v1/me/totp`."),
        "totp_not_started": Message("Нечего подтверждать", "Сначала выполните действие `enable`."),
        "totp_required_by_role": Message("Второй фактор обязателен", "Ваша роль или учётная запись требует второй фактор; его нельзя отключить."),
        "wrong_password": Message("Неверный пароль", "Текущий пароль неверен."),
        "account_locked": Message("Учётная запись заблокирована", "Слишком много неудачных попыток входа: учётная запись заблокирована до {until}."),
        "forbidden": Message("Доступ запрещён", "Ваша роль не позволяет выполнить это действие."),
        "not_found": Message("Не найдено", "Ресурс не существует или недоступен вам."),
        "method_not_allowed": Message("Метод не поддерживается", "Этот ресурс не поддерживает данный метод."),
        "conflict": Message("Конфликт", "Запрос противоречит текущему состоянию ресурса."),
        "validation_failed": Message("Некорректный запрос", "Одно или несколько полей заполнены неверно."),
        "internal_error": Message("Внутренняя ошибка", "На сервере произошла ошибка. Сообщите идентификатор запроса {request_id}."),
        "http_error": Message("Ошибка HTTP", "Запрос завершился с кодом {status}."),
        "username_taken": Message("Имя занято", "Пользователь {username} уже существует."),
        "iin_taken": Message("Лицо уже зарегистрировано", "Лицо с таким ИИН уже зарегистрировано."),
        "iin_unavailable": Message("ИИН недоступен", "Лицо с этим ИИН нельзя зарегистрировать с вашей учётной записи; обратитесь к администратору."),
        "confirmation_needs_supervisor": Message("Решение руководителя", "Сколько точек и секунд подтверждают нарушение по делу, устанавливает руководитель или администратор."),
        "subject_other_case": Message("Лицо в другом деле", "У лица есть активное дело вне вашего списка, или замена шаблона требует руководителя этого дела; обратитесь к руководителю дела или администратору."),
        "serial_taken": Message("Серийный номер занят", "Устройство с серийным номером {serial} уже зарегистрировано."),
        "case_closed": Message("Дело закрыто", "Дело закрыто и не может быть изменено."),
        "device_in_use": Message("Устройство занято", "Устройство используется в другом активном деле."),
        "device_already_assigned": Message("Уже назначено", "Устройство уже назначено этому делу."),
        "no_active_assignment": Message("Не назначено", "Устройство не назначено этому делу."),
        "no_device": Message("Нет устройства", "У дела нет активного устройства для отправки запроса."),
        "alert_transition": Message("Недопустимый переход тревоги", "Тревога в состоянии «{current}» не может перейти в «{target}»."),
        "zone_not_shared": Message("Зона не общая", "К нескольким делам можно прикрепить только общую зону."),
        "zone_already_attached": Message("Уже прикреплена", "Зона уже прикреплена к этому делу."),
        "zone_deleted": Message("Зона удалена", "Зона была удалена."),
        "idempotency_in_progress": Message("Запрос выполняется", "Запрос с этим Idempotency-Key ещё обрабатывается."),
        "idempotency_key_reused": Message("Повтор Idempotency-Key", "Этот Idempotency-Key уже использован для другого запроса."),
        "service_unavailable": Message("Сервис недоступен", "Один из сервисов недоступен; повторите попытку позже."),
        "rate_limited": Message("Слишком много запросов", "Вы сделали {limit} таких запросов за {minutes} мин.; повторите позже."),
    },
    "kk": {
        "bad_request": Message("Қате сұрау", "Сұрауды өңдеу мүмкін емес."),
        "not_authenticated": Message("Кіру қажет", "Жүйеге кіріп, қол жеткізу токенін Bearer-токен ретінде жіберіңіз."),
        "invalid_token": Message("Жарамсыз токен", "Қол жеткізу токені жарамсыз немесе мерзімі өтіп кеткен."),
        "invalid_credentials": Message("Қате тіркелгі деректері", "Пайдаланушы аты немесе құпиясөз қате."),
        "too_many_attempts": Message("Әрекеттер тым көп", "Сәтсіз кіру әрекеттері тым көп: {retry_after} с кейін қайталаңыз."),
        "totp_required": Message("Екінші фактор қажет", "Аутентификатор қолданбасының ағымдағы кодын `totp` өрісінде жіберіңіз."),
        "invalid_totp": Message("Қате код", "Аутентификатор коды қате, мерзімі өткен немесе бұрын қолданылған."),
        "totp_setup_required": Message("Екінші фактор бапталмаған", "Сіздің рөліңіз екінші факторды талап етеді: алдымен оны `/api/v1/me/totp` арқылы баптаңыз."),
        "totp_not_started": Message("Растайтын ештеңе жоқ", "Алдымен `enable` әрекетін орындаңыз."),
        "totp_required_by_role": Message("Екінші фактор міндетті", "Рөліңіз немесе тіркелгіңіз екінші факторды талап етеді; оны өшіруге болмайды."),
        "wrong_password": Message("Қате құпиясөз", "Ағымдағы құпиясөз қате."),
        "account_locked": Message("Тіркелгі бұғатталды", "Сәтсіз кіру әрекеттері тым көп: тіркелгі {until} дейін бұғатталды."),
        "forbidden": Message("Тыйым салынған", "Сіздің рөліңіз бұл әрекетке рұқсат бермейді."),
        "not_found": Message("Табылмады", "Мұндай ресурс жоқ немесе сізге қолжетімсіз."),
        "method_not_allowed": Message("Әдіске рұқсат жоқ", "Бұл ресурс осы әдісті қолдамайды."),
        "conflict": Message("Қайшылық", "Сұрау ресурстың қазіргі күйіне қайшы келеді."),
        "validation_failed": Message("Жарамсыз сұрау", "Бір немесе бірнеше өріс қате толтырылған."),
        "internal_error": Message("Ішкі қате", "Серверде қате орын алды. Сұрау идентификаторын {request_id} хабарлаңыз."),
        "http_error": Message("HTTP қатесі", "Сұрау {status} кодымен аяқталды."),
        "username_taken": Message("Атау бос емес", "{username} пайдаланушысы бұрыннан бар."),
        "iin_taken": Message("Тұлға тіркелген", "Осы ЖСН бар тұлға бұрыннан тіркелген."),
        "iin_unavailable": Message("ЖСН қолжетімсіз", "Бұл ЖСН бар тұлғаны сіздің тіркелгіңізден тіркеу мүмкін емес; әкімшіге хабарласыңыз."),
        "confirmation_needs_supervisor": Message("Жетекшінің шешімі", "Іс бойынша бұзушылықты қанша нүкте мен секунд растайтынын жетекші немесе әкімші белгілейді."),
        "subject_other_case": Message("Тұлға басқа істе", "Тұлғаның сіздің тізіміңізден тыс белсенді ісі бар немесе үлгіні ауыстыру үшін сол істің жетекшісі қажет; іс жетекшісіне немесе әкімшіге хабарласыңыз."),
        "serial_taken": Message("Сериялық нөмір бос емес", "{serial} сериялық нөмірлі құрылғы бұрыннан тіркелген."),
        "case_closed": Message("Іс жабық", "Іс жабылған және оны өзгерту мүмкін емес."),
        "device_in_use": Message("Құрылғы бос емес", "Құрылғы басқа белсенді іске қызмет етеді."),
        "device_already_assigned": Message("Бұрыннан тағайындалған", "Құрылғы бұл іске бұрыннан тағайындалған."),
        "no_active_assignment": Message("Тағайындалмаған", "Құрылғы бұл іске тағайындалмаған."),
        "no_device": Message("Құрылғы жоқ", "Істе сұрау жіберетін белсенді құрылғы жоқ."),
        "alert_transition": Message("Дабылдың жарамсыз ауысуы", "«{current}» күйіндегі дабыл «{target}» күйіне өте алмайды."),
        "zone_not_shared": Message("Аймақ ортақ емес", "Бірнеше іске тек ортақ аймақты тіркеуге болады."),
        "zone_already_attached": Message("Бұрыннан тіркелген", "Аймақ бұл іске бұрыннан тіркелген."),
        "zone_deleted": Message("Аймақ жойылған", "Аймақ жойылған."),
        "idempotency_in_progress": Message("Сұрау орындалуда", "Осы Idempotency-Key бар сұрау әлі өңделуде."),
        "idempotency_key_reused": Message("Idempotency-Key қайталанды", "Бұл Idempotency-Key басқа сұрау үшін қолданылған."),
        "service_unavailable": Message("Қызмет қолжетімсіз", "Қызметтердің бірі қолжетімсіз; кейінірек қайталап көріңіз."),
        "rate_limited": Message("Сұраулар тым көп", "Сіз {minutes} минутта {limit} осындай сұрау жасадыңыз; кейінірек қайталаңыз."),
    },
}

FIELDS: Final[dict[str, dict[str, str]]] = {
    "en": {
        "no_face": "No face found in the photo.",
        "several_faces": "More than one face in the photo.",
        "face_too_small": "The face is too small: come closer (at least {min_px} px wide).",
        "blurred": "The photo is blurred.",
        "turned_away": "The face is turned away: look straight at the camera.",
        "too_dark": "The photo is too dark.",
        "too_bright": "The photo is overexposed.",
        "bad_image": "Not a JPEG or PNG image.",
        "too_large": "The photo is too large.",
        "too_many_photos": "Send 1 to 5 photos.",
        "missing": "This field is required.",
        "empty": "Must not be empty.",
        "extra_forbidden": "This field is not allowed.",
        "string_type": "Must be a string.",
        "string_too_short": "Must have at least {min_length} characters.",
        "string_too_long": "Must have at most {max_length} characters.",
        "string_pattern_mismatch": "Has the wrong format.",
        "int_type": "Must be an integer.",
        "int_parsing": "Must be an integer.",
        "int_from_float": "Must be a whole number.",
        "float_type": "Must be a number.",
        "float_parsing": "Must be a number.",
        "finite_number": "Must be a finite number.",
        "bool_type": "Must be true or false.",
        "bool_parsing": "Must be true or false.",
        "greater_than": "Must be greater than {gt}.",
        "greater_than_equal": "Must be at least {ge}.",
        "less_than": "Must be less than {lt}.",
        "less_than_equal": "Must be at most {le}.",
        "enum": "Must be one of: {expected}.",
        "literal_error": "Must be one of: {expected}.",
        "uuid_type": "Must be a UUID.",
        "uuid_parsing": "Must be a UUID.",
        "date_type": "Must be a date (YYYY-MM-DD).",
        "date_parsing": "Must be a date (YYYY-MM-DD).",
        "date_from_datetime_parsing": "Must be a date (YYYY-MM-DD).",
        "date_from_datetime_inexact": "Must be a date without a time.",
        "datetime_type": "Must be an RFC 3339 date-time.",
        "datetime_parsing": "Must be an RFC 3339 date-time.",
        "datetime_from_date_parsing": "Must be an RFC 3339 date-time.",
        "timezone_aware": "Must carry a UTC offset.",
        "datetime_range": "Must be between the years 1900 and 2200.",
        "list_type": "Must be a list.",
        "dict_type": "Must be an object.",
        "model_type": "Must be an object.",
        "model_attributes_type": "Must be an object.",
        "too_short": "Must have at least {min_length} items.",
        "too_long": "Must have at most {max_length} items.",
        "json_invalid": "The body is not valid JSON.",
        "json_type": "Must be JSON.",
        "union_tag_invalid": "Has an unknown type.",
        "union_tag_not_found": "Must name its type.",
        "value_error": "Is invalid: {reason}.",
        "iin_format": "An IIN has exactly 12 digits.",
        "iin_checksum": "The IIN's check digit is wrong.",
        "iin_century": "The IIN's century and sex digit must be 1 to 6.",
        "iin_birth_date": "The IIN does not match the birth date.",
        "timezone_unknown": "Unknown IANA time zone.",
        "cursor_invalid": "Not a cursor this API issued.",
        "date_order": "Must not be before {other}.",
        "time_order": "Must be after {other}.",
        "window_too_long": "The window may be at most {max_days} days.",
        "place_required": "Give exactly one of geometry and circle.",
        "hour_order": "The window must end after it starts.",
        "geometry_or_circle": "Give exactly one of geometry and circle.",
        "geometry_invalid": "Invalid geometry: {reason}.",
        "outside_service_area": "The zone lies outside the service area (latitude {lat_min}–{lat_max}, longitude {lon_min}–{lon_max}).",
        "outside_service_area_swapped": "The zone lies outside the service area (latitude {lat_min}–{lat_max}, longitude {lon_min}–{lon_max}); latitude and longitude look swapped: give each point as [longitude, latitude].",
        "schedule_invalid": "Invalid schedule: {reason}.",
        "unknown_subject": "No such person.",
        "unknown_user": "No such user.",
        "unknown_device": "No such device.",
        "not_an_officer": "Must be an officer or supervisor you may assign cases to.",
        "not_a_supervisor": "Must be an active supervisor.",
        "invalid_supervisor": "Only officers have a supervisor.",
        "nul_character": "Must not contain NUL characters.",
        "idempotency_key": "Must be 1 to 255 printable ASCII characters.",
        "invalid": "Is invalid.",
    },
    "ru": {
        "no_face": "На фото не найдено лицо.",
        "several_faces": "На фото больше одного лица.",
        "face_too_small": "Лицо слишком маленькое: подойдите ближе (не менее {min_px} пикселей в ширину).",
        "blurred": "Фото размыто.",
        "turned_away": "Лицо отвёрнуто: смотрите прямо в камеру.",
        "too_dark": "Фото слишком тёмное.",
        "too_bright": "Фото пересвечено.",
        "bad_image": "Это не изображение JPEG или PNG.",
        "too_large": "Фото слишком большое.",
        "too_many_photos": "Отправьте от 1 до 5 фотографий.",
        "missing": "Обязательное поле.",
        "empty": "Не может быть пустым.",
        "extra_forbidden": "Это поле не допускается.",
        "string_type": "Должно быть строкой.",
        "string_too_short": "Не менее {min_length} символов.",
        "string_too_long": "Не более {max_length} символов.",
        "string_pattern_mismatch": "Неверный формат.",
        "int_type": "Должно быть целым числом.",
        "int_parsing": "Должно быть целым числом.",
        "int_from_float": "Должно быть целым числом.",
        "float_type": "Должно быть числом.",
        "float_parsing": "Должно быть числом.",
        "finite_number": "Должно быть конечным числом.",
        "bool_type": "Должно быть true или false.",
        "bool_parsing": "Должно быть true или false.",
        "greater_than": "Должно быть больше {gt}.",
        "greater_than_equal": "Должно быть не меньше {ge}.",
        "less_than": "Должно быть меньше {lt}.",
        "less_than_equal": "Должно быть не больше {le}.",
        "enum": "Допустимые значения: {expected}.",
        "literal_error": "Допустимые значения: {expected}.",
        "uuid_type": "Должно быть UUID.",
        "uuid_parsing": "Должно быть UUID.",
        "date_type": "Должно быть датой (ГГГГ-ММ-ДД).",
        "date_parsing": "Должно быть датой (ГГГГ-ММ-ДД).",
        "date_from_datetime_parsing": "Должно быть датой (ГГГГ-ММ-ДД).",
        "date_from_datetime_inexact": "Должно быть датой без времени.",
        "datetime_type": "Должно быть датой и временем RFC 3339.",
        "datetime_parsing": "Должно быть датой и временем RFC 3339.",
        "datetime_from_date_parsing": "Должно быть датой и временем RFC 3339.",
        "timezone_aware": "Должно содержать смещение от UTC.",
        "datetime_range": "Должно быть в пределах 1900-2200 годов.",
        "list_type": "Должно быть списком.",
        "dict_type": "Должно быть объектом.",
        "model_type": "Должно быть объектом.",
        "model_attributes_type": "Должно быть объектом.",
        "too_short": "Не менее {min_length} элементов.",
        "too_long": "Не более {max_length} элементов.",
        "json_invalid": "Тело запроса не является корректным JSON.",
        "json_type": "Должно быть JSON.",
        "union_tag_invalid": "Неизвестный тип.",
        "union_tag_not_found": "Должен быть указан тип.",
        "value_error": "Некорректное значение: {reason}.",
        "iin_format": "ИИН состоит ровно из 12 цифр.",
        "iin_checksum": "Неверная контрольная цифра ИИН.",
        "iin_century": "Цифра века и пола в ИИН должна быть от 1 до 6.",
        "iin_birth_date": "ИИН не соответствует дате рождения.",
        "timezone_unknown": "Неизвестный часовой пояс IANA.",
        "cursor_invalid": "Курсор не был выдан этим API.",
        "date_order": "Не может быть раньше {other}.",
        "time_order": "Должно быть позже {other}.",
        "window_too_long": "Окно не может быть длиннее {max_days} дней.",
        "place_required": "Укажите ровно одно: geometry или circle.",
        "hour_order": "Окно должно заканчиваться после начала.",
        "geometry_or_circle": "Укажите ровно одно из: geometry или circle.",
        "geometry_invalid": "Некорректная геометрия: {reason}.",
        "outside_service_area": "Зона вне зоны обслуживания (широта {lat_min}–{lat_max}, долгота {lon_min}–{lon_max}).",
        "outside_service_area_swapped": "Зона вне зоны обслуживания (широта {lat_min}–{lat_max}, долгота {lon_min}–{lon_max}); похоже, широта и долгота перепутаны: укажите каждую точку как [долгота, широта].",
        "schedule_invalid": "Некорректное расписание: {reason}.",
        "unknown_subject": "Такого лица нет.",
        "unknown_user": "Такого пользователя нет.",
        "unknown_device": "Такого устройства нет.",
        "not_an_officer": "Должен быть инспектор или руководитель, которому вы можете назначать дела.",
        "not_a_supervisor": "Должен быть активный руководитель.",
        "invalid_supervisor": "Руководитель указывается только для инспекторов.",
        "nul_character": "Не должно содержать символов NUL.",
        "idempotency_key": "От 1 до 255 печатных символов ASCII.",
        "invalid": "Некорректное значение.",
    },
    "kk": {
        "no_face": "Суретте бет табылмады.",
        "several_faces": "Суретте бірден көп бет бар.",
        "face_too_small": "Бет тым кішкентай: жақынырақ келіңіз (ені кемінде {min_px} пиксель).",
        "blurred": "Сурет бұлыңғыр.",
        "turned_away": "Бет бұрылған: камераға тура қараңыз.",
        "too_dark": "Сурет тым қараңғы.",
        "too_bright": "Сурет тым жарық.",
        "bad_image": "Бұл JPEG немесе PNG суреті емес.",
        "too_large": "Сурет тым үлкен.",
        "too_many_photos": "1-ден 5-ке дейін сурет жіберіңіз.",
        "missing": "Міндетті өріс.",
        "empty": "Бос болмауы керек.",
        "extra_forbidden": "Бұл өріске рұқсат жоқ.",
        "string_type": "Жол болуы керек.",
        "string_too_short": "Кемінде {min_length} таңба болуы керек.",
        "string_too_long": "Ең көбі {max_length} таңба болуы керек.",
        "string_pattern_mismatch": "Пішімі қате.",
        "int_type": "Бүтін сан болуы керек.",
        "int_parsing": "Бүтін сан болуы керек.",
        "int_from_float": "Бүтін сан болуы керек.",
        "float_type": "Сан болуы керек.",
        "float_parsing": "Сан болуы керек.",
        "finite_number": "Шектеулі сан болуы керек.",
        "bool_type": "true немесе false болуы керек.",
        "bool_parsing": "true немесе false болуы керек.",
        "greater_than": "{gt} мәнінен үлкен болуы керек.",
        "greater_than_equal": "Кемінде {ge} болуы керек.",
        "less_than": "{lt} мәнінен кіші болуы керек.",
        "less_than_equal": "Ең көбі {le} болуы керек.",
        "enum": "Рұқсат етілген мәндер: {expected}.",
        "literal_error": "Рұқсат етілген мәндер: {expected}.",
        "uuid_type": "UUID болуы керек.",
        "uuid_parsing": "UUID болуы керек.",
        "date_type": "Күн болуы керек (ЖЖЖЖ-АА-КК).",
        "date_parsing": "Күн болуы керек (ЖЖЖЖ-АА-КК).",
        "date_from_datetime_parsing": "Күн болуы керек (ЖЖЖЖ-АА-КК).",
        "date_from_datetime_inexact": "Уақытсыз күн болуы керек.",
        "datetime_type": "RFC 3339 күні мен уақыты болуы керек.",
        "datetime_parsing": "RFC 3339 күні мен уақыты болуы керек.",
        "datetime_from_date_parsing": "RFC 3339 күні мен уақыты болуы керек.",
        "timezone_aware": "UTC ығысуы көрсетілуі керек.",
        "datetime_range": "1900-2200 жылдар аралығында болуы керек.",
        "list_type": "Тізім болуы керек.",
        "dict_type": "Нысан болуы керек.",
        "model_type": "Нысан болуы керек.",
        "model_attributes_type": "Нысан болуы керек.",
        "too_short": "Кемінде {min_length} элемент болуы керек.",
        "too_long": "Ең көбі {max_length} элемент болуы керек.",
        "json_invalid": "Сұрау денесі жарамды JSON емес.",
        "json_type": "JSON болуы керек.",
        "union_tag_invalid": "Белгісіз түр.",
        "union_tag_not_found": "Түрі көрсетілуі керек.",
        "value_error": "Жарамсыз мән: {reason}.",
        "iin_format": "ЖСН дәл 12 цифрдан тұрады.",
        "iin_checksum": "ЖСН бақылау цифры қате.",
        "iin_century": "ЖСН-дағы ғасыр мен жыныс цифры 1-ден 6-ға дейін болуы керек.",
        "iin_birth_date": "ЖСН туған күнге сәйкес келмейді.",
        "timezone_unknown": "Белгісіз IANA уақыт белдеуі.",
        "cursor_invalid": "Бұл курсорды осы API бермеген.",
        "date_order": "{other} мәнінен ерте болмауы керек.",
        "time_order": "{other} мәнінен кейін болуы керек.",
        "window_too_long": "Уақыт аралығы {max_days} күннен аспауы керек.",
        "place_required": "geometry немесе circle өрістерінің дәл біреуін беріңіз.",
        "hour_order": "Терезе басталғаннан кейін аяқталуы керек.",
        "geometry_or_circle": "geometry немесе circle өрістерінің дәл біреуін көрсетіңіз.",
        "geometry_invalid": "Жарамсыз геометрия: {reason}.",
        "outside_service_area": "Аймақ қызмет көрсету аумағынан тыс (ендік {lat_min}–{lat_max}, бойлық {lon_min}–{lon_max}).",
        "outside_service_area_swapped": "Аймақ қызмет көрсету аумағынан тыс (ендік {lat_min}–{lat_max}, бойлық {lon_min}–{lon_max}); ендік пен бойлық ауысып кеткен сияқты: әр нүктені [бойлық, ендік] түрінде көрсетіңіз.",
        "schedule_invalid": "Жарамсыз кесте: {reason}.",
        "unknown_subject": "Мұндай тұлға жоқ.",
        "unknown_user": "Мұндай пайдаланушы жоқ.",
        "unknown_device": "Мұндай құрылғы жоқ.",
        "not_an_officer": "Сіз іс тағайындай алатын инспектор немесе басшы болуы керек.",
        "not_a_supervisor": "Белсенді басшы болуы керек.",
        "invalid_supervisor": "Басшы тек инспекторлар үшін көрсетіледі.",
        "nul_character": "NUL таңбалары болмауы керек.",
        "idempotency_key": "1-ден 255-ке дейін басылатын ASCII таңбасы.",
        "invalid": "Жарамсыз мән.",
    },
}


#: The reasons the geometry and schedule checks give (`{reason}` of geometry_invalid,
#: schedule_invalid and value_error), English as they are raised → ru, kk. `{x}` stands for
#: a part that varies (a field path, a number, a name) and is carried over as it is.
REASONS: Final[dict[str, tuple[str, str]]] = {
    "coordinate must be a number": ("координата должна быть числом", "координата сан болуы керек"),
    "coordinate must be finite": ("координата должна быть конечной", "координата шектеулі болуы керек"),
    "position must be [lon, lat]": ("точка должна быть [долгота, широта]", "нүкте [бойлық, ендік] болуы керек"),
    "longitude out of range [-180, 180]": ("долгота вне диапазона [-180, 180]", "бойлық [-180, 180] аралығынан тыс"),
    "latitude out of range [-90, 90]": ("широта вне диапазона [-90, 90]", "ендік [-90, 90] аралығынан тыс"),
    "ring must be an array of positions": ("контур должен быть массивом точек", "контур нүктелер жиымы болуы керек"),
    "ring needs at least 4 positions": ("в контуре нужно не менее 4 точек", "контурда кемінде 4 нүкте болуы керек"),
    "ring is not closed (first and last positions differ)": ("контур не замкнут (первая и последняя точки различаются)", "контур тұйықталмаған (бірінші және соңғы нүктелер әртүрлі)"),
    "ring needs at least 3 distinct vertices": ("в контуре нужно не менее 3 разных вершин", "контурда кемінде 3 түрлі төбе болуы керек"),
    "polygon must be a non-empty array of rings": ("многоугольник должен быть непустым массивом контуров", "көпбұрыш контурлардың бос емес жиымы болуы керек"),
    "must be 'inclusion' or 'exclusion'": ("допустимо «inclusion» или «exclusion»", "«inclusion» немесе «exclusion» болуы керек"),
    "must be a number": ("должно быть числом", "сан болуы керек"),
    "must be a finite number >= 0": ("должно быть конечным числом не меньше 0", "0-ден кем емес шектеулі сан болуы керек"),
    "exactly one of geometry and circle is required": ("нужно ровно одно из: geometry или circle", "geometry немесе circle өрістерінің дәл біреуі қажет"),
    "must be an object with center and radius_m": ("должно быть объектом с center и radius_m", "center және radius_m бар нысан болуы керек"),
    "is required": ("обязательно", "міндетті"),
    "must be a finite number": ("должно быть конечным числом", "шектеулі сан болуы керек"),
    "must be > 0": ("должно быть больше 0", "0-ден үлкен болуы керек"),
    "latitude too close to a pole": ("широта слишком близко к полюсу", "ендік полюске тым жақын"),
    "must be a GeoJSON object": ("должно быть объектом GeoJSON", "GeoJSON нысаны болуы керек"),
    "must be a non-empty array of polygons": ("должно быть непустым массивом многоугольников", "көпбұрыштардың бос емес жиымы болуы керек"),
    "must be 'Polygon' or 'MultiPolygon'": ("допустимо «Polygon» или «MultiPolygon»", "«Polygon» немесе «MultiPolygon» болуы керек"),
    "zone spans more than 180 degrees of longitude": ("зона шире 180 градусов долготы", "аймақ бойлық бойынша 180 градустан кең"),
    "zone too close to a pole": ("зона слишком близко к полюсу", "аймақ полюске тым жақын"),
    "ring is self-intersecting": ("контур самопересекается", "контур өзін-өзі қиып өтеді"),
    "ring crosses {x}": ("контур пересекает {x}", "контур {x} қиып өтеді"),
    "ring has zero area": ("у контура нулевая площадь", "контурдың ауданы нөлге тең"),
    "hole lies outside its shell": ("отверстие лежит вне внешнего контура", "тесік сыртқы контурдан тыс жатыр"),
    "polygon overlaps polygon {x}": ("многоугольник перекрывает многоугольник {x}", "көпбұрыш {x} көпбұрышымен қабаттасады"),
    "must be a time 'HH:MM'": ("должно быть временем «ЧЧ:ММ»", "«СС:ММ» уақыты болуы керек"),
    "time out of range 00:00-23:59": ("время вне диапазона 00:00-23:59", "уақыт 00:00-23:59 аралығынан тыс"),
    "must be an object or null": ("должно быть объектом или null", "нысан немесе null болуы керек"),
    "unknown field": ("неизвестное поле", "белгісіз өріс"),
    "must be a non-empty array (null schedule = always active)": ("должно быть непустым массивом (расписание null = действует всегда)", "бос емес жиым болуы керек (null кесте = әрқашан белсенді)"),
    "must be an object": ("должно быть объектом", "нысан болуы керек"),
    "must be a non-empty array of day names": ("должно быть непустым массивом дней недели", "апта күндерінің бос емес жиымы болуы керек"),
    "must be one of {x}": ("допустимые значения: {x}", "рұқсат етілген мәндер: {x}"),
    "duplicate day": ("день повторяется", "күн қайталанады"),
    "must be an RFC 3339 time": ("должно быть временем RFC 3339", "RFC 3339 уақыты болуы керек"),
    "must carry a UTC offset": ("должно содержать смещение от UTC", "UTC ығысуы көрсетілуі керек"),
    "must be an array": ("должно быть массивом", "жиым болуы керек"),
    "needs 'from' and 'to'": ("нужны «from» и «to»", "«from» және «to» қажет"),
    "must be a string": ("должно быть строкой", "жол болуы керек"),
    "must be an object with 'from' and 'to'": ("должно быть объектом с «from» и «to»", "«from» және «to» бар нысан болуы керек"),
    "must be after 'from'": ("должно быть позже «from»", "«from» мәнінен кейін болуы керек"),
    "unknown IANA timezone {x}": ("неизвестный часовой пояс IANA {x}", "белгісіз IANA уақыт белдеуі {x}"),
    "out of range": ("вне допустимого диапазона", "рұқсат етілген аралықтан тыс"),
}


def _reason_pattern(template: str) -> re.Pattern[str]:
    head, _, tail = template.partition("{x}")
    if not _:
        return re.compile(re.escape(template) + r"\Z")
    return re.compile(re.escape(head) + r"(?P<x>.+?)" + re.escape(tail) + r"\Z")


_REASON_PATTERNS: Final = [(_reason_pattern(en), texts) for en, texts in REASONS.items()]


OR_WORD: Final = {"ru": "или", "kk": "немесе"}


def reason_text(reason: str, lang: str) -> str | None:
    """A check's English reason in `lang` (None when the catalogue does not know it)."""
    if lang not in ("ru", "kk"):
        return reason
    index = 0 if lang == "ru" else 1
    for pattern, texts in _REASON_PATTERNS:
        m = pattern.match(reason)
        if m:
            return texts[index].replace("{x}", m.groupdict().get("x") or "")
    return None


#: Words that appear as parameter values (alert states), per language; English is as is.
VALUES: Final[dict[str, dict[str, str]]] = {
    "ru": {"open": "открыта", "acknowledged": "подтверждена", "resolved": "решена"},
    "kk": {"open": "ашық", "acknowledged": "қабылданды", "resolved": "шешілді"},
}


def problem_text(code: str, lang: str, params: dict[str, Any] | None = None) -> Message:
    """Title and detail of problem `code` in `lang` (English, then `bad_request`, as fallbacks)."""
    catalogue = PROBLEMS.get(lang, PROBLEMS[DEFAULT_LANGUAGE])
    msg = catalogue.get(code) or PROBLEMS[DEFAULT_LANGUAGE].get(code) or catalogue["bad_request"]
    words = VALUES.get(lang, {})
    p = {k: words.get(v, v) if isinstance(v, str) else v for k, v in (params or {}).items()}
    return Message(_fill(msg.title, p), _fill(msg.detail, p))


def field_text(kind: str, lang: str, params: dict[str, Any] | None = None, fallback: str = "") -> str:
    """Message for one invalid field; for unknown types `fallback` (pydantic's English) in
    English and the generic "is invalid" in Kazakh and Russian."""
    catalogue = FIELDS.get(lang, FIELDS[DEFAULT_LANGUAGE])
    template = catalogue.get(kind)
    if template is None:
        return fallback or kind if lang == DEFAULT_LANGUAGE or lang not in FIELDS else catalogue["invalid"]
    p = dict(params or {})
    if "reason" in p:
        reason = reason_text(str(p["reason"]), lang)
        if reason is None:  # never English in a ru/kk answer: the generic message instead
            return catalogue["invalid"]
        p["reason"] = reason
    if lang in OR_WORD and isinstance(p.get("expected"), str):  # pydantic's "'a' or 'b'"
        p["expected"] = p["expected"].replace(" or ", f" {OR_WORD[lang]} ")
    return _fill(template, p)
