"""The one adapter between the engine and Qt: engine calls in, Qt signals out.

Views never call the engine. They call a `Bridge` method, which queues a job (gui.jobs) and
returns at once; the outcome arrives as a signal on the UI thread. One serial queue per VM
carries start and stop; reads and container actions share a pool; long streams (events, logs,
a quick run's output) have their own pool so they never starve the rest.

The VM's state is re-derived every few seconds by a QTimer that queues a job (the UI thread never
sleeps), and at once after anything that changes it. While the VM runs, the engine's event stream
keeps the container and image lists live.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from PySide6.QtCore import QObject, QTimer, Signal
from vmctl_gui import errors
from vmctl_gui.engine import Engine, LayerProgress, RunRequest, VmState
from vmctl_gui.jobs import Job, JobQueue

POLL_MS = 5000  # state re-derived this often: vmctl status is cheap, the CLI may change it
EVENTS_RETRY_S = 3.0  # a dropped event stream (VM restarting) is re-opened after this
STARTING_GRACE_S = 5.0  # a guest still booting ignores ACPI: it is powered off after this
STATS_RETRY_S = 2.0  # a stats stream the engine dropped (it restarted) is re-opened after this
REFRESH_DEBOUNCE_MS = 150  # a burst of events (docker run: create, attach, start) → one list


class Bridge(QObject):
    stateChanged = Signal(object)  # VmState
    startProgress = Signal(str)  # a line of `vmctl start`'s progress
    versionChanged = Signal(object)  # Version
    diskChanged = Signal(object)  # DiskUsage
    containersChanged = Signal(list)  # [ContainerRow]
    imagesChanged = Signal(list)  # [ImageRow]
    volumesChanged = Signal(list)  # [VolumeRow]
    networksChanged = Signal(list)  # [NetworkRow]
    pullProgress = Signal(str, object)  # ref, LayerProgress
    pullFinished = Signal(str, bool)  # ref, succeeded
    error = Signal(str, str)  # what was being done, what to do next
    busyChanged = Signal(bool)  # a start or stop is in progress

    def __init__(self, engine: Engine, parent: QObject | None = None, poll_ms: int = POLL_MS):
        super().__init__(parent)
        self.engine = engine
        self.vm_queue = JobQueue(f"vm-{engine.name}", serial=True)
        self.api = JobQueue("api", threads=4)
        self.streams = JobQueue("streams", threads=16)
        self.state = VmState(engine.name, "unknown")
        self._failure: VmState | None = None
        self._state_job: Job | None = None
        self._events_job: Job | None = None
        self._poll = QTimer(self, interval=poll_ms, timeout=self.refresh_state)
        # Changes come in bursts (docker run: create, attach, start; a pull's events and its
        # own end): each timer turns a burst into one read.
        self._lists = QTimer(self, singleShot=True, interval=REFRESH_DEBOUNCE_MS)
        self._lists.timeout.connect(self.refresh_lists)
        self._disk = QTimer(self, singleShot=True, interval=REFRESH_DEBOUNCE_MS)
        self._disk.timeout.connect(self.refresh_disk)

    def begin(self) -> None:
        """Derive the state now and keep deriving it."""
        self.refresh_state()
        self._poll.start()

    def shutdown(self, timeout_ms: int = 5000) -> None:
        self._poll.stop()
        for queue in (self.streams, self.api, self.vm_queue):
            queue.shutdown(timeout_ms)

    # ---- the VM ----

    @property
    def busy(self) -> bool:
        return self.vm_queue.busy

    def refresh_state(self) -> None:
        if self._state_job is not None:
            return  # one at a time: a slow status (a VM starting) must not pile up jobs
        self._state_job = self.api.submit(
            Job(
                lambda job: self.engine.state(),
                label="status",
                on_done=self._got_state,
                on_error=self._state_failed,
            )
        )

    def start_vm(self) -> Job:
        self._failure = None
        self._set_state(dataclasses.replace(self.state, state="starting", detail=""))
        return self._lifecycle(
            "start the VM",
            lambda job: self.engine.start(job.progress, lambda: job.cancelled),
        )

    def stop_vm(self) -> Job:
        """Stop; a start in progress is cancelled and its VM powered off now, not after the
        start's current stage has run out its time (the ssh stage may wait minutes). The
        queued stop then catches a VM that the start booted meanwhile."""
        self._failure = None
        if self._cancel_starts():
            self.api.submit(
                Job(
                    lambda job: self.engine.stop(lambda _message: None, STARTING_GRACE_S),
                    label="stop the VM now",
                    on_error=self._reporter("stop the VM"),
                )
            )
        return self._lifecycle("stop the VM", lambda job: self.engine.stop(job.progress))

    def restart_vm(self) -> Job:
        self.stop_vm()
        return self.start_vm()

    def save_config(self, config, on_saved: Callable[[], None] | None = None) -> Job:
        return self.vm_queue.submit(
            Job(
                lambda job: self.engine.save_config(config),
                label="save settings",
                on_done=lambda _: on_saved and on_saved(),
                on_error=self._reporter("save the settings"),
            )
        )

    def _lifecycle(self, what: str, fn) -> Job:
        job = Job(
            fn,
            label=what,
            on_done=self._lifecycle_done,
            on_error=self._reporter(what, after=self._lifecycle_failed),
            on_progress=self.startProgress.emit,
        )
        self.vm_queue.submit(job)
        self.busyChanged.emit(True)
        return job

    def _cancel_starts(self) -> bool:
        starts = [job for job in self.vm_queue.jobs if job.label == "start the VM"]
        for job in starts:
            job.cancel()
        return bool(starts)

    def _lifecycle_done(self, state: VmState) -> None:
        if state.state == "error":
            self._failure = state
            self.error.emit(
                "start the VM", f"It failed at stage '{state.failed_stage}': {state.detail}"
            )
        self._got_state(state)
        self.busyChanged.emit(self.vm_queue.busy)

    def _lifecycle_failed(self) -> None:
        self.busyChanged.emit(self.vm_queue.busy)
        self.refresh_state()

    def _got_state(self, state: VmState) -> None:
        self._state_job = None
        if state.state == "running":
            self._failure = None
        elif self._failure is not None and state.state != "starting":
            state = dataclasses.replace(
                self._failure, config=state.config, accel=state.accel or self._failure.accel
            )
        if self.busy and state.state in ("stopped", "not created") and self._starting():
            state = dataclasses.replace(state, state="starting")
        self._set_state(state)

    def _starting(self) -> bool:
        return any(job.label == "start the VM" for job in self.vm_queue.jobs)

    def _state_failed(self, error: BaseException) -> None:
        self._state_job = None
        message = errors.describe(error)
        if message != self.state.detail:  # once, not at every poll
            self.error.emit("read the VM's state", message)
        self._set_state(VmState(self.engine.name, "unknown", message))

    def _set_state(self, state: VmState) -> None:
        was_running = self.state.state == "running"
        changed = state != self.state
        self.state = state
        if changed:
            self.stateChanged.emit(state)
        if state.state == "running" and not was_running:
            self._engine_came_up()
        elif state.state != "running" and was_running:
            self._engine_went_away()

    def _engine_came_up(self) -> None:
        self.refresh_lists()
        self.read("read the engine's version", self.engine.version, self.versionChanged.emit)
        self.refresh_disk()
        self._follow_events()

    def _engine_went_away(self) -> None:
        if self._events_job is not None:
            self._events_job.cancel()
            self._events_job = None
        for emptied in (self.containersChanged, self.imagesChanged, self.volumesChanged,
                        self.networksChanged):  # fmt: skip
            emptied.emit([])

    # ---- the engine ----

    def refresh_disk(self) -> None:
        """Asked when the engine comes up, and after images or containers come or go."""
        self.read("read the disk usage", self.engine.disk_usage, self.diskChanged.emit)

    def refresh_lists(self) -> None:
        self.read("list containers", self.engine.containers, self.containersChanged.emit)
        self.read("list images", self.engine.images, self.imagesChanged.emit)
        self.read("list volumes", self.engine.volumes, self.volumesChanged.emit)
        self.read("list networks", self.engine.networks, self.networksChanged.emit)

    def read(self, what: str, fn: Callable[[], object], on_done: Callable[[object], None]) -> Job:
        """A read in a worker; a failure goes to the error bar as "Could not <what>"."""
        return self.api.submit(
            Job(lambda job: fn(), label=what, on_done=on_done, on_error=self._reporter(what))
        )

    def act(self, what: str, fn: Callable[[], object], on_done=None) -> Job:
        """An engine call that changes something: in a worker, the lists read again after it
        (`on_done(result)` first), a failure in the error bar."""

        def done(result: object) -> None:
            if on_done is not None:
                on_done(result)
            self._changed()

        return self.read(what, fn, done)

    def container_action(self, container_id: str, action: str) -> Job:
        return self.act(f"{action} the container",
                        lambda: self.engine.container_action(container_id, action))  # fmt: skip

    def remove_image(self, image_id: str) -> Job:
        return self.act("remove the image", lambda: self.engine.remove_image(image_id))

    def pull(self, ref: str) -> Job:
        return self.transfer("pull", ref)

    def transfer(self, verb: str, ref: str) -> Job:
        """A pull or a push: progress as pullProgress, the end as pullFinished (ref, ok)."""
        move = self.engine.pull if verb == "pull" else self.engine.push
        return self.follow(f"{verb} {ref}", lambda job: move(ref, job.progress),
                           lambda p: self.pullProgress.emit(ref, p),
                           lambda ok: self.pullFinished.emit(ref, ok))  # fmt: skip

    def follow(self, what: str, work: Callable[[Job], object], on_progress, on_end) -> Job:
        """A long stream (a pull, a push, a build) in its own pool: `work(job)` reports with
        `job.progress` and registers its closer with `job.on_cancel`; `on_end(ok)` comes
        last, a failure also going to the error bar. A cancelled job reports nothing."""

        def done(_result: object) -> None:
            on_end(True)
            self._changed()

        def failed(error: BaseException) -> None:
            on_end(False)
            self._report(what, error)
            self._changed()

        return self.streams.submit(Job(work, label=what, on_done=done, on_error=failed,
                                       on_progress=on_progress))  # fmt: skip

    def run(
        self,
        request: RunRequest,
        on_output: Callable[[str], None],
        on_done: Callable[[], None] | None = None,
        on_pull: Callable[[LayerProgress], None] | None = None,
    ) -> Job:
        """Pull if needed, run, stream the output; `job.cancel()` stops following it."""

        def work(job: Job) -> None:
            lines = self.engine.run(request, lambda p: job.progress(p))
            job.on_cancel(lines.close)
            for line in lines:
                job.progress(line)

        def progress(value: object) -> None:
            if isinstance(value, LayerProgress):
                if on_pull is not None:
                    on_pull(value)
            else:
                on_output(str(value))

        def finished(_result: object) -> None:
            if on_done is not None:
                on_done()

        def failed(error: BaseException) -> None:
            on_output(f"[failed: {errors.describe(error)}]\n")
            finished(None)
            self._report(f"run {request.title}", error)

        return self.streams.submit(
            Job(work, label=f"run {request.title}", on_done=finished, on_error=failed,
                on_progress=progress)
        )  # fmt: skip

    def logs(
        self, container_id: str, on_line: Callable[[str], None], timestamps: bool = False
    ) -> Job:
        def work(job: Job) -> None:
            lines = self.engine.logs(container_id, follow=True, timestamps=timestamps)
            job.on_cancel(lines.close)
            for line in lines:
                job.progress(line)

        return self.streams.submit(
            Job(
                work,
                label="logs",
                on_progress=on_line,
                on_error=self._reporter("follow the logs"),
            )
        )

    # ---- one container's details ----

    def inspect_container(self, container_id: str, on_done, on_error=None) -> Job:
        return self._detail("inspect the container", self.engine.inspect_container,
                            container_id, on_done, on_error)  # fmt: skip

    def inside(self, container_id: str, on_done, on_error=None) -> Job:
        return self._detail("look inside the container", self.engine.inside, container_id,
                            on_done, on_error)  # fmt: skip

    def _detail(self, what: str, fn, container_id: str, on_done, on_error) -> Job:
        """A read for the details pane; its failure goes to `on_error` (the pane says it in
        its own words) or else to the error bar."""
        failed = on_error or self._reporter(what)
        return self.api.submit(
            Job(lambda job: fn(container_id), label=what, on_done=on_done, on_error=failed)
        )

    def stats(self, container_id: str, on_event: Callable[[str, object], None]) -> Job:
        """Follow the stats stream. `on_event(kind, value)`: ("sample", message) each second;
        ("lost", words) when the engine stops answering, after which it tries again every
        STATS_RETRY_S (an engine restarting under an open chart); ("ended", None) when the
        container stopped; ("gone", words) when it was removed."""

        def work(job: Job) -> str:
            while not job.cancelled:
                try:
                    self._stream_stats(job, container_id)
                    if not self.engine.inspect_container(container_id)["State"]["Running"]:
                        return "ended"
                    job.progress(("lost", "The stats stream was cut."))
                except Exception as e:
                    if job.cancelled or getattr(e, "status_code", None) == 404:
                        raise
                    job.progress(("lost", errors.describe(e)))
                job._cancel.wait(STATS_RETRY_S)  # the worker waits; the UI thread never does
            return "cancelled"

        return self.streams.submit(
            Job(work, label="stats", on_progress=lambda event: on_event(*event),
                on_done=lambda kind: on_event(kind, None),
                on_error=lambda e: on_event("gone", errors.describe(e)))
        )  # fmt: skip

    def _stream_stats(self, job: Job, container_id: str) -> None:
        stream = self.engine.stats(container_id)
        job.on_cancel(stream.close)
        for message in stream:
            job.progress(("sample", message))

    def _follow_events(self) -> None:
        def work(job: Job) -> None:
            while not job.cancelled:
                try:
                    stream = self.engine.events()
                    job.on_cancel(getattr(stream, "close", lambda: None))
                    for event in stream:
                        job.progress(event)
                except Exception:
                    if job.cancelled:
                        return
                job._cancel.wait(EVENTS_RETRY_S)  # the worker waits; the UI thread never does

        self._events_job = self.streams.submit(
            Job(work, label="events", on_progress=self._event)
        )  # fmt: skip

    def _event(self, event: dict) -> None:
        kind = event.get("Type")
        if kind in ("container", "image", "volume", "network"):
            self._lists.start()  # restarts the debounce: one refresh after a burst
        if kind in ("image", "volume"):
            self._disk.start()

    def _changed(self) -> None:
        """An action of ours finished: its events may be on their way too, so both are
        debounced into one read (and the action shows even with the event stream down)."""
        self._lists.start()
        self._disk.start()

    def _reporter(self, what: str, after: Callable[[], None] | None = None):
        def report(error: BaseException) -> None:
            self._report(what, error)
            if after is not None:
                after()

        return report

    def _report(self, what: str, error: BaseException) -> None:
        self.error.emit(what, errors.describe(error))
