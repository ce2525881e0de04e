//! Pod volumes: emptyDir, hostPath, configMap, secret, downwardAPI, projected.
