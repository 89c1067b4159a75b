"""Course tooling: the task list (`tasks`), the student-tree builder (`build`), the
grader (`grade`) and its pytest plugin (`plugin`)."""
