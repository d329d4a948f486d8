"""Like the WebUI's errors.report: log and swallow (tests inspect `reported`)."""
import traceback

reported: list[str] = []


def report(message: str, *, exc_info: bool = False) -> None:
    text = message + ("\n" + traceback.format_exc() if exc_info else "")
    reported.append(text)
    print(text)


def display(e: Exception, task: str) -> None:
    report(f"{task}: {e!r}", exc_info=True)
