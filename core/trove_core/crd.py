"""The TroveNamespace custom resource's coordinates and the label keys shared by API and operator."""

from typing import Final

GROUP: Final = "trove.dev"
VERSION: Final = "v1alpha1"
PLURAL: Final = "trovenamespaces"
KIND: Final = "TroveNamespace"
SHORT_NAME: Final = "tns"

LABEL_NAMESPACE: Final = "trove.dev/namespace"
LABEL_WORKSPACE: Final = "trove.dev/workspace"
LABEL_COMPONENT: Final = "trove.dev/component"
