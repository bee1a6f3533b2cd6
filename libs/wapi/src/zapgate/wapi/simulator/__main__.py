from zapgate.wapi.simulator.cli import main

main()
