"""Pure shared code for the Trove server and operator: settings, names, paths, errors, Runtime."""
