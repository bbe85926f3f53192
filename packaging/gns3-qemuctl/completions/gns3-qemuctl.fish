complete --keep-order --exclusive --command gns3-qemuctl --arguments "(COMPLETE=fish gns3-qemuctl -- (commandline --current-process --tokenize --cut-at-cursor) (commandline --current-token))"
