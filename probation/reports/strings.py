# ruff: noqa: RUF001  (Cyrillic letters in the ru/kk catalogues are intended)
"""The words of a report in Kazakh, Russian and English."""

from __future__ import annotations

from typing import Final

LABELS: Final[dict[str, dict[str, str]]] = {
    "en": {
        "title_alert": "Electronic monitoring report: violation episode",
        "title_case": "Electronic monitoring report: supervision period",
        "report_id": "Report", "generated": "Generated", "by": "by",
        "person": "Person under supervision", "full_name": "Full name", "iin": "IIN",
        "birth_date": "Date of birth", "order": "Court order", "order_ref": "Order number",
        "order_period": "Order in force", "risk": "Risk level", "officer": "Probation officer",
        "period": "Period (UTC)", "episode": "Episode", "type": "Type", "severity": "Severity",
        "status": "Status", "started": "Started", "ended": "Ended", "zone": "Zone",
        "timeline": "Timeline (UTC)", "time": "Time", "event": "Event", "detail": "Detail",
        "map": "Map of the track and zones", "evidence": "Evidence fixes (UTC)",
        "lat": "Latitude", "lon": "Longitude", "acc": "Accuracy, m", "src": "Source",
        "devices": "Devices and their health", "serial": "Serial", "kind": "Kind",
        "battery": "Battery, %", "online": "Online", "last_seen": "Last seen",
        "none": "none", "fixes_total": "Fixes in the period: {n}; shown as evidence: {m}",
        "map_note": "No base map: positions in WGS 84 drawn to scale; circles are the "
                    "fixes' 68 % accuracy radii.",
        "footer": "SHA-256 of this report's content: {sha}. Check: GET /api/v1/reports/verify"
                  "?sha256=…  Page {page}/{pages}",
        "exclusion": "exclusion zone", "inclusion": "inclusion zone", "track": "track",
        "start": "start", "end": "end", "north": "N",
        "ev_alert_opened": "Alert raised", "ev_acknowledged": "Acknowledged",
        "ev_resolved": "Resolved", "ev_note": "Note", "ev_escalated": "Escalated",
        "ev_updated": "Evidence updated", "ev_checkin": "Check-in",
        "ev_device": "Device event", "ev_episode_closed": "Episode ended",
    },
    "ru": {
        "title_alert": "Отчёт электронного мониторинга: эпизод нарушения",
        "title_case": "Отчёт электронного мониторинга: период надзора",
        "report_id": "Отчёт", "generated": "Составлен", "by": "пользователем",
        "person": "Поднадзорное лицо", "full_name": "ФИО", "iin": "ИИН",
        "birth_date": "Дата рождения", "order": "Решение суда", "order_ref": "Номер решения",
        "order_period": "Срок действия", "risk": "Уровень риска", "officer": "Офицер пробации",
        "period": "Период (UTC)", "episode": "Эпизод", "type": "Тип", "severity": "Важность",
        "status": "Статус", "started": "Начало", "ended": "Окончание", "zone": "Зона",
        "timeline": "Хронология (UTC)", "time": "Время", "event": "Событие",
        "detail": "Подробности", "map": "Карта трека и зон",
        "evidence": "Доказательные координаты (UTC)", "lat": "Широта", "lon": "Долгота",
        "acc": "Точность, м", "src": "Источник", "devices": "Устройства и их состояние",
        "serial": "Серийный номер", "kind": "Вид", "battery": "Заряд, %", "online": "На связи",
        "last_seen": "Последний сеанс", "none": "нет",
        "fixes_total": "Координат за период: {n}; приведено как доказательства: {m}",
        "map_note": "Без картографической подложки: координаты WGS 84 в масштабе; круги — "
                    "радиусы точности 68 %.",
        "footer": "SHA-256 содержания отчёта: {sha}. Проверка: GET /api/v1/reports/verify"
                  "?sha256=…  Стр. {page}/{pages}",
        "exclusion": "запретная зона", "inclusion": "разрешённая зона", "track": "трек",
        "start": "начало", "end": "конец", "north": "С",
        "ev_alert_opened": "Тревога", "ev_acknowledged": "Принята",
        "ev_resolved": "Закрыта", "ev_note": "Заметка", "ev_escalated": "Эскалация",
        "ev_updated": "Новые доказательства", "ev_checkin": "Отметка",
        "ev_device": "Событие устройства", "ev_episode_closed": "Эпизод завершён",
    },
    "kk": {
        "title_alert": "Электрондық мониторинг есебі: бұзушылық эпизоды",
        "title_case": "Электрондық мониторинг есебі: қадағалау кезеңі",
        "report_id": "Есеп", "generated": "Жасалған уақыты", "by": "пайдаланушы",
        "person": "Қадағаланатын тұлға", "full_name": "Аты-жөні", "iin": "ЖСН",
        "birth_date": "Туған күні", "order": "Сот шешімі", "order_ref": "Шешім нөмірі",
        "order_period": "Қолданылу мерзімі", "risk": "Тәуекел деңгейі",
        "officer": "Пробация офицері", "period": "Кезең (UTC)", "episode": "Эпизод",
        "type": "Түрі", "severity": "Маңыздылығы", "status": "Күйі", "started": "Басталуы",
        "ended": "Аяқталуы", "zone": "Аймақ", "timeline": "Хронология (UTC)",
        "time": "Уақыт", "event": "Оқиға", "detail": "Толығырақ",
        "map": "Трек пен аймақтар картасы", "evidence": "Дәлелдік координаттар (UTC)",
        "lat": "Ендік", "lon": "Бойлық", "acc": "Дәлдік, м", "src": "Көзі",
        "devices": "Құрылғылар және олардың күйі", "serial": "Сериялық нөмірі",
        "kind": "Түрі", "battery": "Заряд, %", "online": "Байланыста",
        "last_seen": "Соңғы байланыс", "none": "жоқ",
        "fixes_total": "Кезеңдегі координаттар: {n}; дәлел ретінде көрсетілгені: {m}",
        "map_note": "Картографиялық негізсіз: WGS 84 координаттары масштабта; шеңберлер — "
                    "68 % дәлдік радиустары.",
        "footer": "Есеп мазмұнының SHA-256: {sha}. Тексеру: GET /api/v1/reports/verify"
                  "?sha256=…  Бет {page}/{pages}",
        "exclusion": "тыйым салынған аймақ", "inclusion": "рұқсат етілген аймақ",
        "track": "трек", "start": "басы", "end": "соңы", "north": "С",
        "ev_alert_opened": "Дабыл", "ev_acknowledged": "Қабылданды",
        "ev_resolved": "Жабылды", "ev_note": "Жазба", "ev_escalated": "Жоғарыға жіберілді",
        "ev_updated": "Жаңа дәлелдер", "ev_checkin": "Белгілену",
        "ev_device": "Құрылғы оқиғасы", "ev_episode_closed": "Эпизод аяқталды",
    },
}


def label(lang: str, key: str, **params: object) -> str:
    text = LABELS.get(lang, LABELS["en"]).get(key) or LABELS["en"].get(key, key)
    return text.format(**params) if params else text
